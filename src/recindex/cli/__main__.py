"""`python -m recindex.cli ...`, the same as the `recindex` command."""

from recindex.cli.app import main

main()

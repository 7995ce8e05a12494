"""`python -m recindex ...` (and `torchrun ... -m recindex train ...`), the same as the `recindex` command."""

from recindex.cli.app import main

main()

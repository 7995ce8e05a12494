"""Help texts reach the terminal as written: typer renders them as rich markup, where a bracketed word
("the config's [index]", "recindex[tracking]") is a style tag and silently disappears unless escaped."""

import re

import typer.main
from typer.testing import CliRunner

import recindex.cli as cli

# rich's markup tag: '[' then a letter, '#', '/' or '@' (rich.markup.RE_TAGS), not preceded by '\'
UNESCAPED_TAG = re.compile(r"(?<!\\)\[[a-z#/@][^\[\]]*\]")


def commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_no_help_text_holds_an_unescaped_markup_tag():
    found = []
    for path, command in commands(typer.main.get_command(cli.app)):
        texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        found += [(" ".join(path), tag) for text in texts for tag in UNESCAPED_TAG.findall(text)]
    assert not found, f"escape these as \\\\[...] or they vanish from --help: {found}"


def test_bracketed_names_appear_in_the_rendered_help():
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["index", "build", "--help"], env={"COLUMNS": "300"}).output
    assert "config names in [index]" in shown
    shown = runner.invoke(cli.app, ["experiment", "run", "--help"], env={"COLUMNS": "300"}).output
    assert "recindex[tracking]" in shown and "[experiment] seeds" in shown

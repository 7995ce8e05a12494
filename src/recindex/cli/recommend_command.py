"""`recindex recommend`: a user's history and what the model retrieves for them."""

from __future__ import annotations

from pathlib import Path

import typer

from recindex.cli.app import app, console
from recindex.cli.present import history_table, recommendations_table
from recindex.pipelines import load_bundle
from recindex.pipelines.recommend import recommend_for_user


@app.command()
def recommend(
    bundle: Path = typer.Argument(..., help="A bundle directory."),
    user: str = typer.Option(..., "--user", help="A user id as it appears in the data."),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many items."),
    include_seen: bool = typer.Option(False, "--include-seen", help="Allow items the user already has."),
) -> None:
    """Show a user's history and the items the model retrieves for them."""
    loaded = load_bundle(bundle)
    history, items, scores = recommend_for_user(loaded, user, k, exclude_seen=not include_seen)
    console.print(history_table(loaded, user, history))
    console.print(recommendations_table(loaded, k, items, scores))

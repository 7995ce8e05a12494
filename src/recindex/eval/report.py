"""Rich tables of metrics, shared by the CLI and the benchmarks."""

from __future__ import annotations

from rich.table import Table

HEADLINE = (
    "recall@5",
    "recall@10",
    "recall@20",
    "recall@50",
    "recall@100",
    "ndcg@10",
    "ndcg@20",
    "mrr",
    "coverage@10",
    "popularity@10",
    "gini@10",
)


def metrics_table(rows: dict[str, dict[str, float]], title: str, keys: tuple[str, ...] = HEADLINE) -> Table:
    """One row per run (e.g. 'valid', 'test'), one column per metric present in any row."""
    present = [k for k in keys if any(k in r for r in rows.values())]
    extra = sorted(
        {k for r in rows.values() for k in r if k.startswith("cold_recall@")},
        key=lambda k: int(k.split("@")[1]),
    )
    table = Table(title=title)
    table.add_column("run", style="bold")
    for key in [*present, *extra]:
        table.add_column(key, justify="right")
    for name, values in rows.items():
        cells = []
        for key in [*present, *extra]:
            value = values.get(key)
            cells.append(
                "-" if value is None else (f"{value:.1f}" if key.startswith("popularity") else f"{value:.4f}")
            )
        table.add_row(name, *cells)
    return table

"""What the commands print: tables and one-line summaries, built from the results the library returns
(no computing here, so the commands stay short and the wording lives in one place)."""

from __future__ import annotations

import json

import numpy as np
from rich.table import Table

from recindex.bundle import Bundle
from recindex.data.interactions import Interactions
from recindex.data.user_shards import UserShards
from recindex.eval.index_eval import IndexEvaluation
from recindex.pipelines.recommend import describe_item


def dataset_table(data: Interactions) -> Table:
    has_time = data.timestamps is not None
    return summary_table(data, data.lengths(), data.item_counts(), has_time, data.fingerprint())


def shards_table(shards: UserShards) -> Table:
    """`dataset_table` of a dataset read in user shards (`recindex data stats` of a Parquet folder)."""
    return summary_table(
        shards.skeleton, shards.user_lengths, shards.item_counts, shards.has_time, shards.fingerprint()
    )


def summary_table(
    data: Interactions, lengths: np.ndarray, counts: np.ndarray, has_time: bool, fingerprint: str
) -> Table:
    """The stats of a dataset: its name, id maps and features from `data`, the rest as given."""
    n_users, n_items, n_interactions = len(lengths), len(counts), int(lengths.sum())
    table = Table(title=f"dataset {data.name}", show_header=False)
    rows = [
        ("users", f"{n_users:,}"),
        ("items", f"{n_items:,}"),
        ("interactions", f"{n_interactions:,}"),
        ("density", f"{n_interactions / max(1, n_users * n_items):.6f}"),
        (
            "sequence length min / median / mean / max",
            f"{lengths.min()} / {int(np.median(lengths))} / {lengths.mean():.2f} / {lengths.max()}",
        ),
        ("item count min / median / max", f"{counts.min()} / {int(np.median(counts))} / {counts.max()}"),
        ("timestamps", "yes" if has_time else "no"),
        ("item feature tokens", f"{data.item_features.n_tokens:,}" if data.item_features else "none"),
        (
            "user feature fields",
            ", ".join(sorted(data.user_features.codes)) if data.user_features else "none",
        ),
        ("fingerprint", fingerprint[:16]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def history_words(exclude_seen: bool) -> str:
    return f"history {'masked' if exclude_seen else 'not masked'}"


STOPPED = {"patience": " (early stopping)", "time": " (stopped by --max-time)"}


def training_line(training, bundle_path) -> str:
    return (
        f"best epoch {training.best_epoch} of {training.epochs_run}{STOPPED.get(training.stopped, '')}, "
        f"training {training.seconds:.0f}s; bundle: {bundle_path}"
    )


def index_cost_table(name: str, backend: str, search_params: dict, result: IndexEvaluation) -> Table:
    table = Table(title=f"index {name} ({backend})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("search parameters", json.dumps(search_params))
    for key, value in result.cost.items():
        table.add_row(key, f"{value:,.4f}" if value < 100 else f"{value:,.0f}")
    return table


def index_list_table(bundle: Bundle, manifests: list[dict]) -> Table:
    table = Table(title=f"indexes of {bundle.bundle_id}")
    columns = (
        "name",
        "spec",
        "items",
        "metric",
        "search parameters",
        "recall@10",
        "recall@100",
        "built",
        "build s",
    )
    for column in columns:
        table.add_column(
            column, justify="right" if column.startswith(("recall", "build s", "items")) else "left"
        )
    for m in manifests:
        check = m.get("self_check") or {}  # indexes built before the self-check have none
        recall_10, recall_k = (
            f"{check[key]:.3f}" if key in check else "-" for key in ("recall_at_10", "recall_at_k")
        )
        table.add_row(
            m["name"],
            m.get("spec", m["backend"]),
            f"{m.get('count', 0):,}",
            m["metric"],
            json.dumps(m.get("search_params", {})),
            recall_10,
            recall_k,
            m.get("created", ""),
            f"{m.get('build_seconds', 0):.1f}",
        )
    return table


def history_table(bundle: Bundle, user: str, history: np.ndarray, shown: int = 20) -> Table:
    table = Table(title=f"user {user}: history (oldest first)")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("about")
    for position, item in enumerate(history[-shown:], start=max(1, len(history) - shown + 1)):
        table.add_row(str(position), *describe_item(bundle.data, int(item)))
    return table


def recommendations_table(bundle: Bundle, k: int, items: np.ndarray, scores: np.ndarray) -> Table:
    table = Table(title=f"top {k} from {bundle.bundle_id}")
    for column in ("rank", "item", "about", "score"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
        table.add_row(str(rank), *describe_item(bundle.data, int(item)), f"{score:.4f}")
    return table

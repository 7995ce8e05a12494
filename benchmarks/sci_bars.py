"""SCI's bars: SymmAligner and the consistent index (CI) against the plain two-tower model with IVF.

Parts (each prints its tables with a PASS / NOT MET line per bar and writes JSON to --out):

    sweep     lambda > 0 chosen on validation Recall@10 among trained bundles (and whether lambda = 0, the
              plain model, does better)
    choices   CI's own choices, made on the validation split: which view places an item in its list (its
              query view, or its item vector) and what the lists cluster (the items' query views, or
              logged queries too), for both towers beside IVF; the variant with the best mean Recall@10
              over the nprobe sweep, on the SymmAligner towers, is the CI that `compare` measures
    compare   plain and SymmAligner towers, each by exact search, FAISS IVF and CI at the same nprobe:
              Recall@10/50, tail-item Recall@50, short-history Recall@10, routing consistency, candidates
              scored, and the misalignment of the two towers' outputs (test split)
    ids       semantic IDs from CI vs RQ-KMeans on the plain item vectors: APE at k = 16, 32, 64 (L = 2),
              and the two-stage generative decoder's Recall@10 when trained on each (bundles from the .sh)
    cost      seconds per training epoch with and without the symmetric loss, alternated in one process

Both indexes get the same number of lists (about sqrt(N): 128 on Beauty) and are compared at every nprobe
of the sweep. Everything runs on one thread. `bash benchmarks/sci_bars.sh` trains what is missing and runs
every part.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bar_report import console, labelled, log, verdict, write_report  # noqa: E402
from bench_common import threads  # noqa: E402

from recindex.data.splits import split_for  # noqa: E402
from recindex.eval.ape import average_partition_entropy, bucket_report  # noqa: E402
from recindex.eval.evaluate import encode_cases  # noqa: E402
from recindex.eval.index_eval import evaluate_index  # noqa: E402
from recindex.index.exact_index import ExactIndex  # noqa: E402
from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import (  # noqa: E402
    ci_options,
    item_attributes,
    make_index,  # noqa: E402
    uri_options,
)
from recindex.quant.semantic_ids import build_semantic_ids  # noqa: E402
from recindex.sci.alignment import (  # noqa: E402
    distribution_gap,
    routing_consistency,
    tail_subsets,
    view_agreement,
)
from recindex.sci.index import COARSE, PLACE, CIIndex, default_nlist  # noqa: E402
from recindex.sci.semantic_ids import sci_semantic_ids  # noqa: E402
from recindex.sci.views import catalogue_query_views  # noqa: E402

SHORT_HISTORY = 5  # "short history": at most this many items before the target
CONSISTENCY_K = 10  # routing consistency over each query's exact top-10


# ---- sweep -----------------------------------------------------------------------------------------------


def sweep(args) -> dict:
    rows = {}
    for label, path in labelled(args.run):
        bundle = load_bundle(path)
        rows[label] = {
            "bundle": path,
            "symmetric_weight": bundle.config.sci.symmetric_weight,
            "swapped_negatives": bundle.config.sci.swapped_negatives,
            "valid_recall@10": bundle.metrics["valid"]["recall@10"],
            "valid_ndcg@10": bundle.metrics["valid"]["ndcg@10"],
            "best_epoch": bundle.metrics["training"]["best_epoch"],
            "training_seconds": bundle.metrics["training"]["seconds"],
        }
    # The SymmAligner run to compare is the best lambda > 0; whether lambda = 0 beats it is reported.
    symmetric = [label for label in rows if rows[label]["symmetric_weight"] > 0]
    if not symmetric:
        raise SystemExit("sweep: no run with sci.symmetric_weight > 0")
    chosen = max(symmetric, key=lambda label: rows[label]["valid_recall@10"])
    best = max(rows, key=lambda label: rows[label]["valid_recall@10"])
    table = Table(title="lambda on the validation split (the test split is not read here)")
    for column in ("run", "lambda", "valid R@10", "valid N@10", "best epoch", "training s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for label, row in rows.items():
        table.add_row(
            label + (" (chosen)" if label == chosen else ""),
            f"{row['symmetric_weight']:g}",
            f"{row['valid_recall@10']:.4f}",
            f"{row['valid_ndcg@10']:.4f}",
            str(row["best_epoch"]),
            f"{row['training_seconds']:.0f}",
        )
    console.print(table)
    if best != chosen:
        console.print(
            f"on validation, {best} ({rows[best]['valid_recall@10']:.4f}) beats every lambda > 0: the "
            f"symmetric loss costs Recall@10 here; {chosen} is the SymmAligner run compared"
        )
    return {"rows": rows, "chosen": chosen, "best_on_validation": best}


# ---- compare ---------------------------------------------------------------------------------------------


def summary(evaluation, subsets: dict[str, np.ndarray]) -> dict:
    ranks = evaluation.ranks
    return {
        "recall@10": evaluation.index["recall@10"],
        "ndcg@10": evaluation.index["ndcg@10"],
        "recall@50": evaluation.index["recall@50"],
        "tail_recall@50": float((ranks[subsets["tail_target"]] < 50).mean()),
        "short_history_recall@10": float((ranks[subsets["short_history"]] < 10).mean()),
        "candidates": evaluation.cost["candidates_scored_per_query"],
        "index_recall@10": evaluation.cost["index_recall@10"],
    }


def ivf_routing(index, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """(item lists (N, 1) by item id, probed lists (Q, nprobe)) of a FAISS IVF index."""
    ivf = faiss.extract_index_ivf(index.index)
    lists = np.full((len(index), 1), -1, np.int64)
    for cell in range(ivf.nlist):
        size = ivf.invlists.list_size(cell)
        if size:
            lists[index.table.ids[faiss.rev_swig_ptr(ivf.invlists.get_ids(cell), size)], 0] = cell
    _, probed = ivf.quantizer.search(np.ascontiguousarray(queries), nprobe)
    return lists, probed


def ci_routing(index: CIIndex, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    lists = index.semantic_ids(np.arange(len(index)))[:, :1]  # built with one list per item
    probed = np.argsort(-(queries @ index.centroids.T), axis=1, kind="stable")[:, :nprobe]
    return lists, probed


def model_rows(
    bundle, nlist: int, nprobes: list[int], variants: dict[str, dict], which: str = "test", rq: bool = True
) -> dict:
    """Exact, IVF and each CI variant (LABEL -> CIIndex options) at every nprobe, on one split; with
    `rq`, the first variant again with its RQ fine codes."""
    split = split_for(bundle.config.data, bundle.data)
    cases = split.eval_cases(which)
    counts = np.bincount(split.train_items, minlength=bundle.model.n_items)
    subsets = tail_subsets(np.diff(cases.history_offsets), cases.targets, counts, SHORT_HISTORY)
    queries = encode_cases(bundle.model, cases).numpy()
    items = bundle.item_embeddings
    ids = np.arange(len(items))
    attributes = item_attributes(bundle.data)
    exact = ExactIndex(items.shape[1])
    exact.add(ids, items, attributes=attributes)
    evaluation = evaluate_index(bundle, exact, which, single_queries=0)
    exact_top = evaluation.exact_top[:, :CONSISTENCY_K]
    rows = {"exact": summary(evaluation, subsets)}
    with torch.no_grad():
        query_views = catalogue_query_views(bundle.model)
    alignment = {
        **distribution_gap(queries, items),
        "view_agreement": view_agreement(query_views, items),
        "cases": int(len(cases)),
        "short_history_cases": int(subsets["short_history"].sum()),
        "tail_target_cases": int(subsets["tail_target"].sum()),
    }
    ivf = make_index(f"faiss:IVF{nlist},Flat", items.shape[1])
    ivf.add(ids, items, attributes=attributes)
    with_queries = any(options.get("coarse") == "items+queries" for options in variants.values())
    from_bundle = ci_options(bundle, with_queries)
    cis = {}
    for label, options in variants.items():
        cis[label] = CIIndex(items.shape[1], nlist=nlist, levels=2, codewords=256, **from_bundle, **options)
        cis[label].add(ids, items, attributes=attributes)
    for nprobe in nprobes:
        log(f"  nprobe {nprobe}")
        runs = [("IVF", ivf, ivf_routing, {"nprobe": nprobe})]
        runs += [(label, ci, ci_routing, {"nprobe": nprobe, "fine": "flat"}) for label, ci in cis.items()]
        if rq:
            first = next(iter(cis))
            runs.append((f"{first}, RQ fine codes", cis[first], None, {"nprobe": nprobe, "fine": "rq"}))
        for name, index, route, params in runs:
            evaluation = evaluate_index(bundle, index, which, params=params, single_queries=0)
            row = summary(evaluation, subsets)
            if route is not None:  # the RQ rows route as their CI does
                row["routing_consistency@10"] = routing_consistency(*route(index, queries, nprobe), exact_top)
            rows[f"{name}, nprobe {nprobe}"] = row
    return {"rows": rows, "alignment": alignment, "nlist": nlist, "variants": variants}


def compare(args) -> dict:
    torch.set_num_threads(1)
    report: dict = {"models": {}}
    towers = [("plain two-tower", args.plain)] + ([("SymmAligner", args.sci)] if args.sci else [])
    for label, path in towers:
        bundle = load_bundle(path)
        nlist = args.nlist or default_nlist(bundle.model.n_items)
        log(f"{label} ({path}): exact, IVF{nlist} and CI with {nlist} lists")
        variants = {"CI": {"place": args.place, "coarse": args.coarse}}
        with threads(1):
            report["models"][label] = {"bundle": path, **model_rows(bundle, nlist, args.nprobe, variants)}
        report["dataset"] = bundle.config.data.dataset
    table = Table(
        title=f"{report['dataset']} test split: towers x index (CI = query-view lists, item-view scores; "
        f"place={args.place}, coarse={args.coarse})"
    )
    columns = (
        "towers",
        "index",
        "R@10",
        "N@10",
        "R@50",
        "tail R@50",
        "short-hist R@10",
        "routing@10",
        "cand.",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("towers", "index") else "right")
    for model, entry in report["models"].items():
        for name, row in entry["rows"].items():
            routing = row.get("routing_consistency@10")
            table.add_row(
                model,
                name,
                f"{row['recall@10']:.4f}",
                f"{row['ndcg@10']:.4f}",
                f"{row['recall@50']:.4f}",
                f"{row['tail_recall@50']:.4f}",
                f"{row['short_history_recall@10']:.4f}",
                "-" if routing is None else f"{routing:.3f}",
                f"{row['candidates']:.0f}",
            )
    console.print(table)
    gap = Table(title="space misalignment of the towers' outputs (test queries vs catalogue items)")
    for column in ("towers", "mean gap", "MMD^2", "mean cos(query, item)", "cos(f_q(I), f_i(I))"):
        gap.add_column(column, justify="left" if column == "towers" else "right")
    for model, entry in report["models"].items():
        a = entry["alignment"]
        gap.add_row(
            model,
            f"{a['mean_gap']:.3f}",
            f"{a['mmd2']:.4f}",
            f"{a['query_item_cosine']:.3f}",
            f"{a['view_agreement']:.3f}",
        )
    console.print(gap)
    report["plot"] = str(plot_recall(report, args))
    bars: list = []
    report["bars"] = bars
    if not args.sci:
        console.print("no SymmAligner bundle given (--sci): the plain towers' rows only, no bars")
        return report
    plain, sci = (report["models"][m]["rows"] for m in ("plain two-tower", "SymmAligner"))
    for nprobe in args.nprobe:
        ours, theirs = sci[f"CI, nprobe {nprobe}"], plain[f"IVF, nprobe {nprobe}"]
        for metric in ("recall@10", "tail_recall@50"):
            ok = ours[metric] > theirs[metric]
            bars.append(
                {
                    "nprobe": nprobe,
                    "metric": metric,
                    "sci_ci": ours[metric],
                    "plain_ivf": theirs[metric],
                    "pass": ok,
                }
            )
            console.print(
                f"nprobe {nprobe}: SymmAligner + CI {metric} {ours[metric]:.4f} vs plain + IVF "
                f"{theirs[metric]:.4f} ({ours[metric] / max(theirs[metric], 1e-12) - 1:+.1%}): {verdict(ok)}"
            )
    return report


CI_VARIANTS = {
    f"CI place={place} coarse={coarse}": {"place": place, "coarse": coarse}
    for place in ("query", "item")
    for coarse in ("items", "items+queries")
}


def choices(args) -> dict:
    """CI's variants on the validation split; the test split is not read."""
    torch.set_num_threads(1)
    report: dict = {"models": {}}
    for label, path in (("plain two-tower", args.plain), ("SymmAligner", args.sci)):
        bundle = load_bundle(path)
        nlist = args.nlist or default_nlist(bundle.model.n_items)
        log(f"{label} ({path}), validation split: IVF{nlist} and {len(CI_VARIANTS)} CI variants")
        with threads(1):
            entry = model_rows(bundle, nlist, args.nprobe, CI_VARIANTS, which="valid", rq=False)
        report["models"][label] = {"bundle": path, **entry}
        report["dataset"] = bundle.config.data.dataset
    table = Table(title=f"{report['dataset']} validation split: CI's variants beside IVF (the same lists)")
    for column in ("towers", "index", *(f"nprobe {n}: R@10 / tail R@50 / routing" for n in args.nprobe)):
        table.add_column(column, justify="left" if column in ("towers", "index") else "right")
    for model, entry in report["models"].items():
        for name in ("IVF", *CI_VARIANTS):
            cells = []
            for nprobe in args.nprobe:
                row = entry["rows"][f"{name}, nprobe {nprobe}"]
                cells.append(
                    f"{row['recall@10']:.4f} / {row['tail_recall@50']:.4f} / "
                    f"{row['routing_consistency@10']:.3f}"
                )
            table.add_row(model, name, *cells)
    console.print(table)
    rows = report["models"]["SymmAligner"]["rows"]
    mean_recall = {
        name: statistics.mean(rows[f"{name}, nprobe {n}"]["recall@10"] for n in args.nprobe)
        for name in CI_VARIANTS
    }
    chosen = max(mean_recall, key=mean_recall.get)
    report["mean_valid_recall@10"] = mean_recall
    report["chosen"] = {"label": chosen, **CI_VARIANTS[chosen]}
    console.print(
        f"chosen on validation (mean Recall@10 over nprobe {args.nprobe}, SymmAligner towers): {chosen} "
        f"({mean_recall[chosen]:.4f})"
    )
    return report


def plot_recall(report: dict, args) -> Path:
    """Recall@10 and tail-item Recall@50 against candidates scored, over the nprobe sweep (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model, entry in report["models"].items():
        for name, style in (("IVF", "--"), ("CI", "-")):
            rows = [entry["rows"][f"{name}, nprobe {n}"] for n in args.nprobe]
            for axis, metric in zip(axes, ("recall@10", "tail_recall@50"), strict=True):
                axis.plot(
                    [r["candidates"] for r in rows],
                    [r[metric] for r in rows],
                    style,
                    marker="o",
                    label=f"{model} + {name}",
                )
        for axis, metric in zip(axes, ("recall@10", "tail_recall@50"), strict=True):
            axis.axhline(entry["rows"]["exact"][metric], color="grey", linewidth=0.5)
    for axis, metric in zip(axes, ("Recall@10", "tail-item Recall@50"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("candidates scored per query (nprobe " + ", ".join(map(str, args.nprobe)) + ")")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"{report['dataset']} test split: IVF (item-view lists) vs CI (query-view lists); grey: exact"
    )
    figure.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recall_vs_candidates.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ---- ids -------------------------------------------------------------------------------------------------


def leaf_numbers(codes: np.ndarray, k: int) -> np.ndarray:
    return codes[:, 0].astype(np.int64) * k + codes[:, 1]


def ids(args) -> dict:
    torch.set_num_threads(1)
    plain, sci = load_bundle(args.plain), load_bundle(args.sci)
    split = split_for(plain.config.data, plain.data)
    report: dict = {"ape": {}, "two_stage": {}}
    for k in args.k:
        log(f"semantic IDs, k = {k}, L = 2")
        codes = {
            "RQ-KMeans (plain item vectors)": build_semantic_ids(
                plain.item_embeddings, "rq_kmeans", k, 2
            ).codes,
            "RQ-KMeans (SymmAligner item vectors)": build_semantic_ids(
                sci.item_embeddings, "rq_kmeans", k, 2
            ).codes,
            "CI (plain towers)": sci_semantic_ids(plain.model, k, 2),
            "CI (SymmAligner towers)": sci_semantic_ids(sci.model, k, 2),
        }
        report["ape"][k] = {
            name: {
                "ape": average_partition_entropy(leaf_numbers(c, k), split.train_offsets, split.train_items),
                "ape_layer1": average_partition_entropy(c[:, 0], split.train_offsets, split.train_items),
                **bucket_report(leaf_numbers(c, k)),
            }
            for name, c in codes.items()
        }
    table = Table(
        title="APE of semantic IDs (L = 2; users' training items as positives; lower is tighter; "
        "APE rewards unbalanced leaves, so the largest leaf and the leaves in use are shown)"
    )
    table.add_column("IDs")
    for k in args.k:
        table.add_column(f"k={k}: leaves (layer 1) [largest, used]", justify="right")
    for name in report["ape"][args.k[0]]:
        cells = []
        for k in args.k:
            row = report["ape"][k][name]
            cells.append(
                f"{row['ape']:.3f} ({row['ape_layer1']:.3f}) [{row['size_max']:.0f}, {row['used']:,.0f}]"
            )
        table.add_row(name, *cells)
    console.print(table)
    for label, path in labelled(args.two_stage):
        bundle = load_bundle(path)
        log(f"two-stage decoder on {label} ({path})")
        index = make_index("uri", bundle.item_embeddings.shape[1], options=uri_options(bundle))
        index.add(
            np.arange(bundle.model.n_items), bundle.item_embeddings, attributes=item_attributes(bundle.data)
        )
        with threads(1):
            evaluation = evaluate_index(
                bundle, index, "test", params={"beam": 20, "rank": "decoder"}, single_queries=0
            )
        report["two_stage"][label] = {"bundle": path, "index": bundle.config.uri.index, **evaluation.index}
        console.print(
            f"{label}: R@10 {evaluation.index['recall@10']:.4f}, N@10 {evaluation.index['ndcg@10']:.4f}"
        )
    bars = []
    for k in args.k:
        ours = report["ape"][k]["CI (SymmAligner towers)"]["ape"]
        theirs = report["ape"][k]["RQ-KMeans (plain item vectors)"]["ape"]
        bars.append({"k": k, "ci_ape": ours, "rq_kmeans_ape": theirs, "pass": ours < theirs})
        console.print(
            f"k={k}: APE of SCI's IDs {ours:.3f} vs RQ-KMeans on the plain vectors {theirs:.3f}: "
            + verdict(ours < theirs)
        )
    report["bars"] = bars
    return report


# ---- cost ------------------------------------------------------------------------------------------------


def cost(args) -> dict:
    from recindex.config import load_config
    from recindex.data.registry import load_dataset
    from recindex.models.two_tower import TwoTowerModel
    from recindex.sci.train import SymmetricTrainer
    from recindex.train.batches import iterate_batches, sequence_examples

    torch.set_num_threads(1)
    config = load_config(args.config, args.set)
    data = load_dataset(config.data.dataset, config.data.data_dir)
    split = split_for(config.data, data)
    examples = None
    seconds: dict[float, list[float]] = {0.0: [], args.weight: []}
    for repeat in range(args.repeats):
        for weight in (0.0, args.weight):
            torch.manual_seed(repeat)
            model = TwoTowerModel.for_data(data, config.model)
            trainer = SymmetricTrainer(
                model,
                split,
                config.train,
                config.eval,
                dataclasses.replace(config.sci, symmetric_weight=weight),
                progress=False,
            )
            if examples is None:
                examples = sequence_examples(split, model.shape.n_users, model.n_items, model.config.max_len)
            optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
            model.train()
            started = time.perf_counter()
            for batch in iterate_batches(examples, config.train.batch_size, np.random.default_rng(repeat)):
                loss = trainer._loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            seconds[weight].append(time.perf_counter() - started)
            log(f"repeat {repeat + 1}, lambda {weight:g}: {seconds[weight][-1]:.1f} s for one epoch")
    plain, symmetric = statistics.median(seconds[0.0]), statistics.median(seconds[args.weight])
    console.print(
        f"{config.data.dataset}: one training epoch (no evaluation), one thread, median of {args.repeats}: "
        f"{plain:.1f} s without the symmetric loss, {symmetric:.1f} s with it ({symmetric / plain:.2f}x)"
    )
    return {
        "dataset": config.data.dataset,
        "negatives": config.train.negatives,
        "seconds_per_epoch": {"plain": plain, "symmetric": symmetric},
        "ratio": symmetric / plain,
        "all": {str(k): v for k, v in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/sci", help="folder for the JSON reports")
    parts = parser.add_subparsers(dest="part", required=True)
    p = parts.add_parser("sweep", help="lambda chosen on validation Recall@10")
    p.add_argument(
        "--run", action="append", required=True, help="LABEL=BUNDLE (lambda = 0 is the plain model)"
    )
    p = parts.add_parser("choices", help="CI's variants on the validation split, one chosen for compare")
    p.add_argument("--plain", required=True, help="the plain two-tower bundle")
    p.add_argument("--sci", required=True, help="the SymmAligner bundle (lambda chosen by `sweep`)")
    p.add_argument("--nlist", type=int, default=0, help="lists of both indexes (0: about sqrt(N))")
    p.add_argument("--nprobe", type=int, nargs="+", default=[2, 4, 8, 16])
    p = parts.add_parser("compare", help="towers x index on the test split, with the misalignment measures")
    p.add_argument("--plain", required=True, help="the plain two-tower bundle")
    p.add_argument(
        "--sci", help="the SymmAligner bundle (lambda chosen by `sweep`); without it, the plain rows"
    )
    p.add_argument("--nlist", type=int, default=0, help="lists of both indexes (0: about sqrt(N))")
    p.add_argument("--nprobe", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--place", choices=PLACE, default="query", help="CI: the view that places an item")
    p.add_argument("--coarse", choices=COARSE, default="items", help="CI: what its lists cluster")
    p = parts.add_parser("ids", help="semantic IDs: APE and the two-stage decoder's Recall@10")
    p.add_argument("--plain", required=True)
    p.add_argument("--sci", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--two-stage", action="append", default=[], help="LABEL=BUNDLE of a two-stage decoder")
    p = parts.add_parser("cost", help="seconds per epoch with and without the symmetric loss")
    p.add_argument("--config", default="configs/beauty_two_tower.toml")
    p.add_argument("--set", action="append", default=[], help="config override, as in `recindex train`")
    p.add_argument("--weight", type=float, default=1.0, help="lambda of the symmetric run")
    p.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    report = {"sweep": sweep, "choices": choices, "compare": compare, "ids": ids, "cost": cost}[args.part](
        args
    )
    write_report(report, args.out, args.part)


if __name__ == "__main__":
    main()

"""Pinned results: the metrics of two-tower, MFLI, URI and SCI bundles and of their indexes, for fixed
seeds, on a small synthetic dataset and on MovieLens-100K. A refactoring must leave them unchanged;
`test_pinned_results.py` compares a fresh run with `pinned_results.json`.

    python -m tests.regression.pinned --write     # record the figures of the code as it is now
    python -m tests.regression.pinned             # print a fresh run's figures beside the pinned ones

Only figures that do not depend on timing are pinned (no latencies, no training seconds).

The figures are computed in a child process whose arithmetic is the same on every x86-64 machine
(`REPRODUCIBLE`): torch's kernels without CPU-specific vectorisation, MKL's conditional numerical
reproducibility, oneDNN and FAISS on their generic code. Why: with each machine's fastest kernels the
last bits of a sum differ between CPU generations, and URI's balanced assignments turn those bits into
different codes: between two machines its ML-100K index recall@10 moved from 0.296 to 0.275, where the
other families' figures did not move at all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).with_name("pinned_results.json")
# Every metric of a small run moves when one user's rank moves (1/943 on ML-100K); with `REPRODUCIBLE`
# arithmetic nothing else should move, and this tolerance only absorbs the rounding to 6 digits.
TOLERANCE = 1e-4

DATASETS = {
    "synthetic": "synthetic:n_users=300,n_items=200,n_attributes=20,seed=4",
    "ml-100k": "ml-100k",
}
BASE = [
    "model.dim=16",
    "model.max_len=20",
    "train.batch_size=64",
    "train.threads=1",
    "train.uniform_negatives=32",
    "eval.batch_size=256",
]
METRICS = ("recall@10", "ndcg@10", "recall@50", "mrr")
INDEX_METRICS = ("recall@10", "ndcg@10")
INDEX_COST = ("index_recall@10", "candidates_scored_per_query")
# Set before torch, MKL, oneDNN and FAISS load (their code paths are chosen at import).
REPRODUCIBLE = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "FAISS_OPT_LEVEL": "generic",
    "OMP_NUM_THREADS": "1",
}


def _metrics(report: dict, names=METRICS) -> dict[str, float]:
    return {name: round(float(report[name]), 6) for name in names}


def _index_figures(bundle, spec: str, params: dict | None = None) -> dict[str, float]:
    from recindex.eval.index_eval import evaluate_index
    from recindex.pipelines.indexes import build_bundle_index

    _, index, _, _ = build_bundle_index(bundle, spec, "pinned", overwrite=True)
    report = evaluate_index(bundle, index, "test", params=params, single_queries=0)
    figures = _metrics(report.index, INDEX_METRICS)
    figures.update({name: round(float(report.cost[name]), 6) for name in INDEX_COST})
    return figures


def _train(dataset: str, settings: list[str], out: Path):
    from recindex.config import load_config
    from recindex.pipelines import load_bundle
    from recindex.pipelines.experiment import run_experiment

    config = load_config(None, [f'data.dataset="{dataset}"', *BASE, *settings])
    result = run_experiment(config, out, progress=False)
    return load_bundle(result.bundle_path)


def reproducible() -> bool:
    return all(os.environ.get(name) == value for name, value in REPRODUCIBLE.items())


def compute_reproducibly(name: str, data_dir: str | None = None) -> dict[str, dict[str, float]]:
    """`compute` in a child process with the `REPRODUCIBLE` arithmetic."""
    command = [sys.executable, "-m", "tests.regression.pinned", "--dataset", name, "--figures"]
    if data_dir:
        command += ["--data-dir", data_dir]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    child = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **REPRODUCIBLE, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the pinned run of {name} failed:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout)


def compute(name: str, data_dir: str | None = None) -> dict[str, dict[str, float]]:
    """The pinned figures of one dataset, trained from scratch in a temporary folder (in this process:
    see `compute_reproducibly`)."""
    torch.set_num_threads(1)
    dataset = DATASETS[name]
    data_setting = [f'data.data_dir="{data_dir}"'] if data_dir else []
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tt = _train(dataset, [*data_setting, "train.epochs=2"], tmp / "tt")
        figures["two_tower"] = _metrics(tt.metrics["test"])
        figures["two_tower/exact"] = _index_figures(tt, "exact")
        figures["two_tower/faiss:IVF8,Flat"] = _index_figures(tt, "faiss:IVF8,Flat", {"nprobe": 2})
        figures["two_tower/ci"] = _index_figures(tt, "ci:nlist=8,levels=1,codewords=8", {"nprobe": 2})

        mfli = _train(
            dataset,
            [
                *data_setting,
                "train.epochs=3",
                'model.kind="mfli"',
                "mfli.codewords=4",
                "mfli.quant_start=1",
                "mfli.level_gap=1",
                f'mfli.init_from="{tt.path}"',
            ],
            tmp / "mfli",
        )
        figures["mfli"] = _metrics(mfli.metrics["test"])
        figures["mfli/mfli"] = _index_figures(mfli, "mfli", {"leaves": 4})

        uri = _train(
            dataset,
            [
                *data_setting,
                'model.kind="uri"',
                "uri.k=4",
                "uri.layers=2",
                "uri.layer_epochs=2",
                "uri.batch_size=64",
                "uri.ranker_epochs=1",
                "uri.beam=4",
                f'uri.init_from="{tt.path}"',
            ],
            tmp / "uri",
        )
        figures["uri"] = _metrics(uri.metrics["test"])
        figures["uri/uri"] = _index_figures(uri, "uri")

        sci = _train(
            dataset,
            [*data_setting, "train.epochs=2", "sci.symmetric_weight=0.1", 'sci.swapped_negatives="in_batch"'],
            tmp / "sci",
        )
        figures["sci"] = _metrics(sci.metrics["test"])
        figures["sci/ci"] = _index_figures(sci, "ci:nlist=8,levels=1,codewords=8", {"nprobe": 2})
    return figures


def differences(expected: dict, actual: dict) -> list[str]:
    """Lines naming every figure that moved by more than the tolerance (or is missing)."""
    moved = []
    for part, values in expected.items():
        for metric, value in values.items():
            got = actual.get(part, {}).get(metric)
            if got is None or abs(got - value) > TOLERANCE:
                moved.append(f"{part} {metric}: pinned {value}, now {got}")
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the figures in pinned_results.json")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--dataset", choices=list(DATASETS), help="one dataset only")
    parser.add_argument("--figures", action="store_true", help="print the figures as JSON, nothing else")
    args = parser.parse_args(argv)
    if args.figures:
        if not reproducible():
            raise SystemExit(f"--figures needs the environment {REPRODUCIBLE} (compute_reproducibly sets it)")
        print(json.dumps(compute(args.dataset or "synthetic", args.data_dir)))
        return 0
    names = [args.dataset] if args.dataset else list(DATASETS)
    results = {name: compute_reproducibly(name, args.data_dir) for name in names}
    if args.write:
        if args.dataset:
            raise SystemExit("--write records every dataset: leave out --dataset")
        PINNED.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {PINNED}")
        return 0
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    moved = [f"{name}: {line}" for name in names for line in differences(pinned[name], results[name])]
    print(json.dumps(results, indent=2, sort_keys=True))
    print("\n".join(moved) or "every pinned figure is unchanged")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())

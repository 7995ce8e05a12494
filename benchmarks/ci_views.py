"""How far CI's lists hold what a bundle's queries score: view agreement, and index recall@100 by placement,
number of lists and nprobe, beside IVF on the item vectors (docs/sci.md, "Towers whose two views disagree").

    python benchmarks/ci_views.py runs/beauty --nlist 128
    python benchmarks/ci_views.py runs/b100k --nlist 64 256 1024 --nprobe 8 32 128

Queries: the user vectors of --queries validation cases drawn at random (seed 0); ground truth: their
exact top-100 by inner product over the bundle's item vectors. With exact fine scores (CI's default) an
index returns every top-100 item that lies in a list it probes, so its recall@100 is computed here from
the lists alone (`recindex evaluate BUNDLE --index ci` gives the same figure through the index).

Per number of lists: spherical k-means (FAISS, 20 iterations, seed 0) on the items' query views for CI,
on the (non-zero) item vectors for IVF; then, for each placement and nprobe, recall@100 and the items
scored per query (the sizes of the probed lists). Placements: CI's default (an item in the list of its
query view's nearest centroid), place=item (the centroid that scores its item vector highest), both
lists at once, and IVF (the nearest item-vector centroid).
"""

from __future__ import annotations

import argparse

import faiss
import numpy as np
import torch

from recindex.data.splits import split_for
from recindex.eval.evaluate import encode_cases
from recindex.pipelines import load_bundle
from recindex.sci.alignment import list_agreement
from recindex.sci.views import catalogue_query_views

K = 100


def top_k(items: np.ndarray, queries: np.ndarray, block: int = 100) -> np.ndarray:
    parts = [
        np.argpartition(-(queries[i : i + block] @ items.T), K - 1, axis=1)[:, :K]
        for i in range(0, len(queries), block)
    ]
    return np.concatenate(parts)


def kmeans(vectors: np.ndarray, k: int) -> np.ndarray:
    model = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=0, spherical=True, min_points_per_centroid=1)
    model.train(np.ascontiguousarray(vectors, np.float32))
    return model.centroids


def recall_and_cost(
    lists: np.ndarray, centroids: np.ndarray, queries, truth, nprobe: int
) -> tuple[float, float]:
    """(recall@100, items scored per query) of queries probing their nprobe nearest centroids, for items
    in `lists` (n, a): a of them each."""
    k = len(centroids)
    nearest = np.argsort(-(queries @ centroids.T), axis=1)[:, :nprobe]
    probed = np.zeros((len(queries), k), bool)
    np.put_along_axis(probed, nearest, True, axis=1)
    sizes = sum(np.bincount(column, minlength=k) for column in lists.T)
    rows = np.arange(len(queries))[:, None]
    found = np.zeros(truth.shape, bool)
    for column in lists.T:
        found |= probed[rows, column[truth]]
    return float(found.mean()), float((probed * sizes).sum(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle")
    parser.add_argument("--nlist", type=int, nargs="+", default=[128])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    bundle = load_bundle(args.bundle)
    split = split_for(bundle.config.data, bundle.data)
    cases = split.eval_cases("valid")
    pick = np.random.default_rng(0).choice(
        len(cases.users), min(args.queries, len(cases.users)), replace=False
    )
    queries = encode_cases(bundle.model, cases).numpy().astype(np.float32)[pick]
    items = np.ascontiguousarray(bundle.item_embeddings, np.float32)
    views = catalogue_query_views(bundle.model)
    warm = np.linalg.norm(items, axis=1) > 1e-6
    truth = top_k(items, queries)
    seen = np.bincount(split.train_items, minlength=len(items)) > 0
    print(
        f"{args.bundle}: {len(items):,} items, {warm.mean():.1%} with a non-zero item vector, "
        f"{seen.mean():.1%} seen in training; exact top-100 items with a zero vector: "
        f"{(~warm[truth]).mean():.1%}; norm of the mean query view {np.linalg.norm(views.mean(0)):.3f}, "
        f"of the mean user vector {np.linalg.norm(queries.mean(0)):.3f}"
    )
    print(
        "| lists | index | cos(f_q(I), f_i(I)) | same list | largest list | "
        + " | ".join(f"nprobe {p}" for p in args.nprobe)
        + " |"
    )
    for k in args.nlist:
        by_view, by_item = kmeans(views, k), kmeans(items[warm], k)
        agreement = list_agreement(views, items, by_view)
        query_lists = np.argmax(views @ by_view.T, axis=1)
        item_lists = np.argmax(items @ by_view.T, axis=1)
        placements = {
            "CI, place=query": (query_lists[:, None], by_view),
            "CI, place=item": (item_lists[:, None], by_view),
            "CI, both lists": (np.stack([query_lists, item_lists], axis=1), by_view),
            "IVF on the item vectors": (np.argmax(items @ by_item.T, axis=1)[:, None], by_item),
        }
        for name, (lists, centroids) in placements.items():
            cells = []
            for nprobe in args.nprobe:
                if nprobe > k:
                    cells.append("-")
                    continue
                recall, cost = recall_and_cost(lists, centroids, queries, truth, nprobe)
                cells.append(f"{recall:.3f} ({cost:,.0f})")
            largest = max(np.bincount(column, minlength=k).max() for column in lists.T)
            print(
                f"| {k} | {name} | {agreement['cosine']:.3f} | {agreement['same_list']:.1%} | {largest:,} | "
                + " | ".join(cells)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()

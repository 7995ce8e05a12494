"""What the facets of a trained MFLI model carry, measured rather than assumed.

- per facet: the retrieval metrics of that facet's score alone (exact search, the protocol's cases);
- between facets: linear CKA of the item vectors (1 = the same geometry up to rotation and scale,
  0 = unrelated) and the overlap of the facets' top-10 lists for the same users. Facets that were
  copies of one another would show CKA near 1 and overlap near 1;
- the codebook: share of codewords used per level and facet, and leaf sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from recindex.data.splits import Split
from recindex.eval.evaluate import encode_cases
from recindex.eval.metrics import recall_at_k
from recindex.index.exact import exact_search
from recindex.mfli.model import MFLIModel
from recindex.mfli.train import codebook_array
from recindex.quant.codebook import assign_codes, utilisation


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of two (n, d) representations of the same n items."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    cross = np.linalg.norm(a.T @ b) ** 2
    return float(cross / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def facet_report(model: MFLIModel, split: Split, which: str = "valid", ks=(10, 50)) -> dict:
    cases = split.eval_cases(which)
    queries = encode_cases(model, cases)
    with torch.no_grad():
        items = model.item_vectors()
    dim, names = model.facet_dim, model.facets
    exclude = {"exclude_offsets": cases.history_offsets, "exclude_items": cases.history_items}

    def search(q, v):
        return exact_search(q.contiguous(), v.contiguous(), max(ks), targets=cases.targets, **exclude)

    report: dict = {"facets": list(names), "per_facet": {}, "cka": {}, "top10_overlap": {}}
    tops = []
    for f, name in enumerate(names):
        top, _, ranks = search(queries[:, f * dim : (f + 1) * dim], items[:, f * dim : (f + 1) * dim])
        report["per_facet"][name] = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
        tops.append(top[:, :10])
    _, _, ranks = search(queries, items)
    report["per_facet"]["merged (sum)"] = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    vectors = items.numpy()
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            pair = f"{names[i]}/{names[j]}"
            report["cka"][pair] = linear_cka(
                vectors[:, i * dim : (i + 1) * dim], vectors[:, j * dim : (j + 1) * dim]
            )
            shared = (tops[i][:, :, None] == tops[j][:, None, :]).any(-1).sum(1) / 10
            report["top10_overlap"][pair] = float(shared.mean())
    if int(model.active_levels):
        codebook = codebook_array(model)
        codes = assign_codes(codebook, vectors.reshape(len(vectors), len(names), dim))
        report["codebook"] = utilisation(codes, codebook.shape[2])
    return report

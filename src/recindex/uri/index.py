"""The `uri` index backend: a generative retriever served through the index contract.

Search: the decoder reads the router block of each query vector (see `uri_model`) and beam search over
the token tree, restricted to prefixes that exist, keeps the `beam` best leaves; the union of their items
is the candidate set, scored by the inner product of the full vectors (which is the ranker's score).
With `rank="decoder"` and a model trained with TIGER's item token, the decoder itself ranks: the beam
runs one layer further, down to single items, ordered by sequence log-probability.

Writes: items of the training catalogue keep the codes the model assigned them (`codes` option, by item
id); any other item is coded on arrival by the decoder's item end from the router block of its vector
(greedy, each layer's most probable token among those that exist under its prefix, so it joins a leaf
that already exists). The stored rows, attributes, filters and removal are the exact backend's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from recindex.errors import InvalidRequest
from recindex.index.base import MAX_K, Capabilities, Metric, SearchResult
from recindex.index.exact_index import ExactIndex
from recindex.index.filters import Filter, as_filter
from recindex.uri.decoder import TokenDecoder
from recindex.uri.token_tree import TokenTree, beam_search

MAX_BEAM = 1024
RANKINGS = ("ranker", "decoder")


class URIIndex(ExactIndex):
    backend = "uri"
    default_search_params = {"beam": 20, "rank": "ranker"}

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        search_params=None,
        *,
        decoder: Mapping[str, np.ndarray] | None = None,
        token_sizes: list[int] | None = None,
        leaf_layers: int | None = None,
        blocks: int = 2,
        heads: int = 2,
        codes: np.ndarray | None = None,
    ):
        if decoder is None or not token_sizes:
            raise InvalidRequest(
                "a uri index serves a trained URI model: build it from a URI bundle "
                "(recindex index build BUNDLE --backend uri)"
            )
        if metric != "ip" or dim % 3:
            raise InvalidRequest(
                f"a uri index scores by inner product over 3 blocks of d; got {metric}, dim {dim}"
            )
        super().__init__(dim, metric, "float32", search_params)
        self.model_dim = dim // 3
        self.token_sizes = [int(s) for s in token_sizes]
        self.leaf_layers = int(leaf_layers or len(self.token_sizes))
        if not 1 <= self.leaf_layers <= len(self.token_sizes):
            raise InvalidRequest(f"leaf_layers must be in 1..{len(self.token_sizes)}, got {leaf_layers}")
        self.blocks, self.heads = blocks, heads
        self.decoder = TokenDecoder(
            self.model_dim, self.token_sizes, dim=self.model_dim, blocks=blocks, heads=heads
        )
        try:
            self.decoder.load_state_dict(
                {k: torch.as_tensor(np.asarray(v)) for k, v in decoder.items()}, strict=True
            )
        except (RuntimeError, KeyError) as error:
            raise InvalidRequest(
                f"the decoder weights do not fit a decoder of sizes {self.token_sizes}: {error}"
            ) from None
        self.decoder.eval()
        self.known_codes = (
            np.zeros((0, len(self.token_sizes)), np.int64) if codes is None else np.asarray(codes, np.int64)
        )
        if self.known_codes.ndim != 2 or self.known_codes.shape[1] != len(self.token_sizes):
            raise InvalidRequest(
                f"codes must be (items, {len(self.token_sizes)}), got {self.known_codes.shape}"
            )
        self._codes = np.zeros((0, len(self.token_sizes)), np.int64)  # per slot
        self._trees: dict[int, tuple[TokenTree, np.ndarray]] = {}  # depth -> (tree, slot of each member)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            upsert=True, remove=True, filter="native", persist=True, attributes=True, triggers=True
        )

    # ---- writes ----------------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        before = self.table.used
        existing = self.table.lookup(ids) >= 0
        super()._add(ids, vectors, attributes)
        if len(self._codes) < len(self._rows):
            grown = np.zeros((len(self._rows), len(self.token_sizes)), np.int64)
            grown[: len(self._codes)] = self._codes
            self._codes = grown
        new = ~existing
        if new.any():
            slots = self.table.lookup(ids[new])
            assert slots.min() >= before
            self._codes[slots] = self._codes_for(ids[new], vectors[new])
        self._trees.clear()

    def _codes_for(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        codes = np.empty((len(ids), len(self.token_sizes)), np.int64)
        known = ids < len(self.known_codes)
        codes[known] = self.known_codes[ids[known]]
        if (~known).any():
            codes[~known] = self._decode_items(vectors[~known])
        return codes

    def _decode_items(self, vectors: np.ndarray) -> np.ndarray:
        """Greedy codes from the decoder's item end, each layer restricted to prefixes that exist."""
        features = torch.as_tensor(vectors[:, 2 * self.model_dim :])
        live = (
            self._codes[self.table.live_slots()] if self.table.used else np.zeros((0, len(self.token_sizes)))
        )
        with torch.no_grad():
            start = self.decoder.encode(features, "item")
            tokens = torch.zeros((len(vectors), 0), dtype=torch.long)
            for layer, size in enumerate(self.token_sizes):
                log_probs = self.decoder.next_log_probs(start, tokens).numpy()
                if len(live):
                    allowed = _existing_children(live, tokens.numpy(), layer, size)
                    log_probs = np.where(allowed, log_probs, -np.inf)
                tokens = torch.cat([tokens, torch.as_tensor(log_probs.argmax(1))[:, None]], 1)
        return tokens.numpy()

    def _remove(self, ids: np.ndarray) -> int:
        removed = super()._remove(ids)
        self._trees.clear()
        return removed

    def _compacted(self, keep: np.ndarray) -> None:
        super()._compacted(keep)
        self._codes = self._codes[keep].copy()

    # ---- search ----------------------------------------------------------------------------------------

    def _tree(self, depth: int) -> tuple[TokenTree, np.ndarray]:
        """The token tree of the live items' first `depth` tokens, and each tree member's slot."""
        if depth not in self._trees:
            live = self.table.live_slots()
            tree = TokenTree(self._codes[live, :depth], max(self.token_sizes[:depth]))
            self._trees[depth] = (tree, live)
        return self._trees[depth]

    def leaves(
        self, routers: np.ndarray, beam: int, depth: int
    ) -> tuple[np.ndarray, np.ndarray, TokenTree, np.ndarray]:
        """Beam search of (n, d) router query vectors down to `depth` tokens.

        Returns (leaves, scores, tree, slots)."""
        tree, slots = self._tree(depth)
        radix = tree.k
        with torch.no_grad():
            start = self.decoder.encode(torch.as_tensor(np.ascontiguousarray(routers)), "query")

            def next_log_probs(tokens: np.ndarray, layer: int) -> np.ndarray:
                n, width, _ = tokens.shape
                expanded = start.repeat_interleave(width, 0)
                # A beam wider than the tree's live prefixes carries dead entries (score -inf) whose
                # tokens may be outside a layer's vocabulary; clip them so the decoder can read them.
                tokens = np.minimum(tokens, np.asarray(self.token_sizes[: tokens.shape[2]]) - 1)
                log_probs = self.decoder.next_log_probs(
                    expanded, torch.as_tensor(tokens.reshape(n * width, -1))
                )
                out = np.full((n, width, radix), -np.inf)
                out[:, :, : log_probs.shape[1]] = log_probs.numpy().reshape(n, width, -1)
                return out

            found, scores = beam_search(next_log_probs, tree, len(routers), beam)
        return found, scores, tree, slots

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        beam, rank = params["beam"], params["rank"]
        if rank not in RANKINGS:
            raise InvalidRequest(f"search parameter rank must be one of {RANKINGS}, got {rank!r}")
        if beam > MAX_BEAM:
            raise InvalidRequest(f"search parameter beam must be at most {MAX_BEAM}, got {beam}")
        eligible = self.table.eligible(flt) if (flt is not None or self.table.dead) else None
        routers = queries[:, self.model_dim : 2 * self.model_dim]
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        scored = np.zeros(len(queries), np.int64)
        if rank == "decoder":
            if len(self.token_sizes) == self.leaf_layers:
                raise InvalidRequest(
                    "rank='decoder' needs a model trained with the item token (uri.generate_items)"
                )
            leaves, leaf_scores, tree, slots = self.leaves(routers, max(beam, k), len(self.token_sizes))
            for row in range(len(queries)):
                members, owner = tree.items_by_leaf(leaves[row])  # leaves come best first
                members = slots[members]
                keep = np.ones(len(members), bool) if eligible is None else eligible[members]
                take = min(k, int(keep.sum()))
                ids[row, :take] = self.table.ids[members[keep][:take]]
                scores[row, :take] = leaf_scores[row][owner[keep][:take]]
                scored[row] = len(members)
            return SearchResult(ids, scores, scored)
        leaves, _, tree, slots = self.leaves(routers, beam, self.leaf_layers)
        for row in range(len(queries)):
            members = slots[tree.items_of(leaves[row][leaves[row] >= 0])]
            if eligible is not None:
                members = members[eligible[members]]
            scored[row] = len(members)
            if not len(members):
                continue
            values = self._rows[members] @ queries[row]
            take = min(k, len(members))
            best = np.argsort(-values, kind="stable")[:take]
            ids[row, :take] = self.table.ids[members[best]]
            scores[row, :take] = values[best]
        return SearchResult(ids, scores, scored)

    def search_triggers(
        self,
        trigger_ids,
        k: int,
        *,
        filter: Filter | str | dict | None = None,  # noqa: A002
        beam: int | None = None,
    ) -> SearchResult:
        """Item-to-item: the triggers' own leaves plus the leaves a beam search finds for their mean
        router vector (item and user vectors share the towers' space), scored by the mean of their
        ranker vectors; the triggers themselves are left out."""
        with self._guard:
            slots = self.table.lookup(np.asarray(trigger_ids, np.int64).reshape(-1))
            if not len(slots) or (slots < 0).any():
                raise InvalidRequest("every trigger must be an item of the index")
            if (
                not isinstance(k, int | np.integer)
                or isinstance(k, bool)
                or not 1 <= k <= min(len(self), MAX_K)
            ):
                raise InvalidRequest(f"k must be an integer from 1 to {min(len(self), MAX_K)}, got {k!r}")
            flt = as_filter(filter)
            d = self.model_dim
            rows = self._rows[slots]
            query = np.concatenate([rows[:, :d].mean(0), rows[:, 2 * d :].mean(0), np.zeros(d, np.float32)])
            query = query.astype(np.float32)
            leaves, _, tree, tree_slots = self.leaves(
                query[None, d : 2 * d], beam or self.search_params["beam"], self.leaf_layers
            )
            own = np.unique(tree._prefix(self._codes[slots], self.leaf_layers))
            members = tree_slots[tree.items_of(np.union1d(leaves[0][leaves[0] >= 0], own))]
            members = members[~np.isin(members, slots)]
            if flt is not None or self.table.dead:
                members = members[self.table.eligible(flt)[members]]
            ids = np.full((1, k), -1, np.int64)
            scores = np.full((1, k), -np.inf, np.float32)
            if len(members):
                values = self._rows[members] @ query
                best = np.argsort(-values, kind="stable")[:k]
                ids[0, : len(best)] = self.table.ids[members[best]]
                scores[0, : len(best)] = values[best]
            return SearchResult(ids, scores, np.array([len(members)]))

    # ---- what the quality report reads -------------------------------------------------------------------

    def codes_of_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of the live items."""
        live = self.table.live_slots()
        return self.table.ids[live], self._codes[live]

    # ---- persistence -------------------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        super()._save(folder)
        np.save(folder / "codes.npy", self._codes[: self.table.used], allow_pickle=False)
        np.savez(folder / "decoder.npz", **{k: v.numpy() for k, v in self.decoder.state_dict().items()})
        return {
            "storage": "float32",
            "token_sizes": self.token_sizes,
            "leaf_layers": self.leaf_layers,
            "blocks": self.blocks,
            "heads": self.heads,
        }

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> URIIndex:
        state = manifest["state"]
        with np.load(folder / "decoder.npz", allow_pickle=False) as arrays:
            weights = {name: arrays[name] for name in arrays.files}
        index = cls(
            manifest["dim"],
            manifest["metric"],
            decoder=weights,
            token_sizes=state["token_sizes"],
            leaf_layers=state["leaf_layers"],
            blocks=state["blocks"],
            heads=state["heads"],
        )
        loaded = ExactIndex._load(folder, {**manifest, "state": {"storage": "float32"}})
        index.table, index._rows, index._sq_norms = loaded.table, loaded._rows, loaded._sq_norms
        codes = np.load(folder / "codes.npy", allow_pickle=False)
        if codes.shape != (index.table.used, len(index.token_sizes)):
            raise InvalidRequest(
                f"{folder}/codes.npy has shape {codes.shape}, expected ({index.table.used}, "
                f"{len(index.token_sizes)})"
            )
        index._codes = codes.astype(np.int64)
        return index

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"URIIndex({len(self)} items, tokens {self.token_sizes}, leaves at {self.leaf_layers})"


def _existing_children(live_codes: np.ndarray, prefixes: np.ndarray, layer: int, size: int) -> np.ndarray:
    """(n, size) whether token t under each row's prefix exists among the live items' codes (a prefix
    with no child at all allows every token: the item then opens a new leaf)."""
    allowed = np.zeros((len(prefixes), size), bool)
    for row, prefix in enumerate(prefixes):
        under = (live_codes[:, :layer] == prefix).all(1) if layer else np.ones(len(live_codes), bool)
        children = np.unique(live_codes[under, layer])
        if len(children):
            allowed[row, children] = True
        else:
            allowed[row] = True
    return allowed

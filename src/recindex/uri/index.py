"""The `uri` index backend: a generative retriever served through the index contract.

Search: the decoder reads the router block of each query vector (see `uri_model`) and beam search over
the token tree, restricted to prefixes that exist, keeps the `beam` best leaves; the union of their items
is the candidate set, scored by the inner product of the full vectors (which is the ranker's score).
With `rank="decoder"` and a model trained with TIGER's item token, the decoder itself ranks: the beam
runs one layer further, down to single items, ordered by sequence log-probability. With
`compress="pq4"` the leaves are also held as 4-bit fast-scan codes and the ranker scores only the
codes' best k x `refine` exactly (`recindex.uri.compressed_leaves`).

Writes: items of the training catalogue keep the codes the model assigned them (`codes` option, by item
id); any other item is coded on arrival by the decoder's item end from the router block of its vector
(greedy, each layer's most probable token among those that exist under its prefix, so it joins a leaf
that already exists).

This module decides only placement (an item's tokens) and routing (the beam's leaves, or the decoder's
own ranking); storage, filters, removal, batched rescoring and persistence are the learned-index base's
(`recindex.index.learned`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from recindex.errors import InvalidRequest
from recindex.index.base import Metric, SearchResult, drop_excluded
from recindex.index.filters import Filter
from recindex.index.learned import Column, Lists, PartitionedIndex, Route, number_codes, rank
from recindex.index.learned.compressed import check_compression
from recindex.index.learned.fast_scan import CODE_DIMS
from recindex.uri.compressed_leaves import REFINE, CompressedLeaves, leaf_lists
from recindex.uri.decoder import TokenDecoder
from recindex.uri.fill import fill_short_rows
from recindex.uri.token_tree import TokenTree, beam_search, existing_children

MAX_BEAM = 1024
RANKINGS = ("ranker", "decoder")


class URIIndex(PartitionedIndex):
    backend = "uri"
    default_search_params = {"beam": 20, "rank": "ranker"}
    has_triggers = True

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
        compress: str = "none",
        code_dims: int = CODE_DIMS,
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
        token_sizes = [int(s) for s in token_sizes]
        check_compression(compress, code_dims, dim)
        self.compress, self.code_dims = compress, code_dims
        if compress == "pq4":  # the codes' refine depth is a search parameter of compressed leaves only
            self.default_search_params = {**self.default_search_params, "refine": REFINE}
        super().__init__(
            dim, metric, search_params, {"codes": Column(len(token_sizes), np.int64, 0, "codes.npy")}
        )
        self.model_dim = dim // 3
        self.token_sizes = token_sizes
        self.leaf_layers = int(leaf_layers or len(self.token_sizes))
        if not 1 <= self.leaf_layers <= len(self.token_sizes):
            raise InvalidRequest(f"leaf_layers must be in 1..{len(self.token_sizes)}, got {leaf_layers}")
        if compress == "pq4":
            leaf_lists(self.token_sizes, self.leaf_layers)  # refuses a shape with too many leaves
        self._compressed: CompressedLeaves | None = None
        self._saved_codes: dict[str, np.ndarray] | None = None  # the quantizer of a loaded index
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
        # depth -> the token tree of the live items' first `depth` tokens and its leaves' slots
        self._trees: dict[int, tuple[TokenTree, Lists]] = {}

    @property
    def _codes(self) -> np.ndarray:
        return self.store.columns["codes"]

    # ---- placement -------------------------------------------------------------------------------------

    def _placement(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Codes of the items not stored yet (an item already stored keeps the codes it has)."""
        new = self.table.lookup(ids) < 0
        return self._codes_for(ids[new], vectors[new])

    def _place(self, slots, new, vectors, placement) -> None:
        self._codes[slots[new]] = placement
        self._trees.clear()
        if self.compress == "pq4":
            self._compressed = self._compressed or self._new_compressed()
            self._compressed.placed(slots, vectors, self._codes[slots], new)

    def _new_compressed(self) -> CompressedLeaves:
        return CompressedLeaves(
            self.dim, self.token_sizes, self.leaf_layers, self.code_dims, self._saved_codes
        )

    def _codes_for(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        codes = np.empty((len(ids), len(self.token_sizes)), np.int64)
        known = ids < len(self.known_codes)
        codes[known] = self.known_codes[ids[known]]
        if (~known).any():
            codes[~known] = self._decode_items(vectors[~known])
        return codes

    def _decode_items(self, vectors: np.ndarray) -> np.ndarray:
        """Greedy codes from the decoder's item end, each layer restricted to prefixes that exist among
        the items already stored."""
        features = torch.as_tensor(vectors[:, 2 * self.model_dim :])
        live = self._codes[self.table.live_slots()]
        with torch.no_grad():
            start = self.decoder.encode(features, "item")
            tokens = torch.zeros((len(vectors), 0), dtype=torch.long)
            for layer in range(len(self.token_sizes)):
                log_probs = self.decoder.next_log_probs(start, tokens).numpy()
                if len(live):
                    allowed = existing_children(live, tokens.numpy(), layer, self.token_sizes)
                    log_probs = np.where(allowed, log_probs, -np.inf)
                tokens = torch.cat([tokens, torch.as_tensor(log_probs.argmax(1))[:, None]], 1)
        return tokens.numpy()

    def _unplace(self, slots: np.ndarray) -> None:
        self._trees.clear()

    def _compacted(self, keep: np.ndarray) -> None:
        self._trees.clear()
        if self._compressed is not None:
            used = self.table.used
            self._compressed.rebuilt(np.arange(used), self.store.rows[:used], self._codes[:used])

    # ---- routing ---------------------------------------------------------------------------------------

    def _tree(self, depth: int) -> tuple[TokenTree, Lists]:
        """The token tree of the live items' first `depth` tokens, and the slots under each of its leaves."""
        if depth not in self._trees:
            live = self.table.live_slots()
            tree = TokenTree(self._codes[live, :depth], max(self.token_sizes[:depth]))
            self._trees[depth] = (tree, Lists(tree.offsets, live[tree.members]))
        return self._trees[depth]

    def leaves(
        self, routers: np.ndarray, beam: int, depth: int
    ) -> tuple[np.ndarray, np.ndarray, TokenTree, Lists]:
        """Beam search of (n, d) router query vectors down to `depth` tokens.

        Returns (leaves, scores, tree, lists): the leaves as the tree's prefix numbers, best first."""
        tree, lists = self._tree(depth)
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
        return found, scores, tree, lists

    def _checked(self, params: dict) -> tuple[int, str]:
        beam, ranking = params["beam"], params["rank"]
        if ranking not in RANKINGS:
            raise InvalidRequest(f"search parameter rank must be one of {RANKINGS}, got {ranking!r}")
        if beam > MAX_BEAM:
            raise InvalidRequest(f"search parameter beam must be at most {MAX_BEAM}, got {beam}")
        return beam, ranking

    def _route(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> Route:
        beam, _ = self._checked(params)
        leaves, _, tree, lists = self.leaves(
            queries[:, self.model_dim : 2 * self.model_dim], beam, self.leaf_layers
        )
        return Route(_partition_numbers(tree, leaves), lists)

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        if params["rank"] == "decoder":
            return super()._search(queries, k, flt, params)
        return self._search_excluding(queries, k, flt, params, [])

    def _search_excluding(
        self, queries: np.ndarray, k: int, flt: Filter | None, params: dict, exclusions: list[np.ndarray]
    ) -> SearchResult:
        """The ranker scores the items of the beam's leaves. A row that a filter or removed items leave
        short is scored over every eligible item (the learned-index base's fallback); a row the leaves
        leave short on their own (a narrow beam, once the history is dropped) keeps the beam's answers
        first and is filled from further leaves (`recindex.uri.fill`)."""
        beam, ranking = self._checked(params)
        if ranking == "decoder":
            return super()._search_excluding(queries, k, flt, params, exclusions)
        eligible = self.eligible(flt)
        fetch = min(len(self), k + max((len(row) for row in exclusions), default=0))
        routers = queries[:, self.model_dim : 2 * self.model_dim]
        leaves, _, tree, lists = self.leaves(routers, beam, self.leaf_layers)
        scored_leaves = _partition_numbers(tree, leaves)
        if self.compress == "pq4":  # the same leaves, by their prefix numbers (-1: not in the tree)
            slots, scores, scored = self._compressed.ranked(
                queries,
                np.where(scored_leaves >= 0, leaves, -1),
                fetch,
                params["refine"],
                self.store.rows,
                eligible,
            )
        else:
            score = self.exact_scorer(queries)
            slots, scores, scored = rank(scored_leaves, lists, fetch, score, eligible=eligible)
        result = SearchResult(self.store.ids_of(slots), scores, scored)
        if eligible is not None:  # a filter or removed items: short rows are scored over every match
            self._fill_short_rows(queries, fetch, eligible, result)
        if exclusions:
            result = drop_excluded(result, exclusions, k)
        excluded = [self._excluded_slots(row, eligible) for row in exclusions]
        available = len(self) if eligible is None else int(eligible.sum())
        need = np.minimum(k, available - np.array([len(row) for row in excluded] or 0))

        def find_leaves(rows: np.ndarray, width: int) -> np.ndarray:
            return _partition_numbers(tree, self.leaves(routers[rows], width, self.leaf_layers)[0])

        fill_short_rows(
            result,
            np.broadcast_to(need, len(queries)),
            scored_leaves,
            beam,
            find_leaves,
            lists,
            lambda rows: self.exact_scorer(queries[rows]),
            self.store.ids_of,
            eligible=eligible,
            excluded=excluded,
            max_width=MAX_BEAM,
        )
        return result

    def _excluded_slots(self, ids: np.ndarray, eligible: np.ndarray | None) -> np.ndarray:
        """The slots of a row's excluded ids that it could otherwise return."""
        slots = self.table.lookup(np.unique(ids))
        slots = slots[slots >= 0]
        return slots if eligible is None else slots[eligible[slots]]

    def _rank(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> SearchResult:
        beam, ranking = self._checked(params)
        if ranking == "ranker":
            return super()._rank(queries, k, params, eligible)
        if len(self.token_sizes) == self.leaf_layers:
            raise InvalidRequest(
                "rank='decoder' needs a model trained with the item token (uri.generate_items)"
            )
        # The decoder ranks: the beam runs down to single items, whose order is the beam's (best first).
        routers = queries[:, self.model_dim : 2 * self.model_dim]
        leaves, leaf_scores, tree, lists = self.leaves(routers, max(beam, k), len(self.token_sizes))
        slots, row, column = lists.expand(_partition_numbers(tree, leaves))
        scored = np.bincount(row, minlength=len(queries))
        keep = np.ones(len(slots), bool) if eligible is None else eligible[slots]
        slots, row, column = slots[keep], row[keep], column[keep]
        place = np.arange(len(row)) - np.searchsorted(row, row)  # rank within its row
        first = place < k
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids[row[first], place[first]] = self.table.ids[slots[first]]
        scores[row[first], place[first]] = leaf_scores[row[first], column[first]]
        return SearchResult(ids, scores, scored)

    # ---- item to item ------------------------------------------------------------------------------------

    def trigger_params(self) -> dict[str, int]:
        return {"beam": self.search_params["beam"]}

    def _triggers(self, slots: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        """The triggers' own leaves plus the leaves a beam search finds for their mean router vector (item
        and user vectors share the towers' space), scored by the mean of their ranker vectors."""
        d = self.model_dim
        rows = self.store.rows[slots]
        query = np.concatenate([rows[:, :d].mean(0), rows[:, 2 * d :].mean(0), np.zeros(d, np.float32)])
        query = query[None, :].astype(np.float32)
        leaves, _, tree, lists = self.leaves(query[:, d : 2 * d], params["beam"], self.leaf_layers)
        own = np.unique(number_codes(self._codes[slots, : self.leaf_layers], tree.k))
        probes = _partition_numbers(tree, np.union1d(leaves[0][leaves[0] >= 0], own)[None, :])
        eligible = self.eligible(flt)
        allowed = np.ones(self.table.used, bool) if eligible is None else eligible.copy()
        allowed[slots] = False
        found, scores, scored = rank(probes, lists, k, self.exact_scorer(query), eligible=allowed)
        return SearchResult(self.store.ids_of(found), scores, scored)

    # ---- reports -----------------------------------------------------------------------------------------

    def codes_of_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of the live items."""
        live = self.table.live_slots()
        return self.table.ids[live], self._codes[live]

    def _slot_partitions(self, live: np.ndarray) -> dict[str, np.ndarray]:
        """One partition per layer of the token tree down to the leaves (the last: "leaves")."""
        codes = self._codes[live]
        partitions = {}
        for layer in range(self.leaf_layers):
            name = "leaves" if layer == self.leaf_layers - 1 else f"layer {layer + 1}"
            partitions[name] = number_codes(codes[:, : layer + 1], self.token_sizes[: layer + 1])
        return partitions

    # ---- persistence -------------------------------------------------------------------------------------

    def _save_state(self, folder: Path) -> dict:
        np.savez(folder / "decoder.npz", **{k: v.numpy() for k, v in self.decoder.state_dict().items()})
        if self._compressed is not None:
            self._compressed.save(folder)
        return {
            "compress": self.compress,
            "code_dims": self.code_dims,
            "storage": "float32",  # what the exact backend's files record: these are its files too
            "token_sizes": self.token_sizes,
            "leaf_layers": self.leaf_layers,
            "blocks": self.blocks,
            "heads": self.heads,
        }

    @classmethod
    def _restore(cls, folder: Path, manifest: dict) -> URIIndex:
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
            compress=state.get("compress", "none"),  # indexes saved before the option held no codes
            code_dims=state.get("code_dims", CODE_DIMS),
        )
        index._saved_codes = CompressedLeaves.saved_state(folder)
        return index

    def _loaded(self, folder: Path) -> None:
        used = self.table.used
        if self.compress == "pq4" and used:
            if self._saved_codes is None:
                raise InvalidRequest(f"{folder} holds no pq4_centroids.npy / pq4_references.npy")
            self._compressed = self._new_compressed()
            self._compressed.placed(
                np.arange(used), self.store.rows[:used], self._codes[:used], np.ones(used, bool)
            )

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"URIIndex({len(self)} items, tokens {self.token_sizes}, leaves at {self.leaf_layers})"


def _partition_numbers(tree: TokenTree, leaves: np.ndarray) -> np.ndarray:
    """Leaves as prefix numbers (-1: none) -> their places among the tree's leaves (-1: none)."""
    place = np.searchsorted(tree.leaf_keys, leaves).clip(max=len(tree.leaf_keys) - 1)
    return np.where((leaves >= 0) & (tree.leaf_keys[place] == leaves), place, -1)

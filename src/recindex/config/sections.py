"""The run configuration's sections: one frozen dataclass per TOML table, with defaults and meanings.

Choices are `Literal`s and lists are tuples, so `recindex.config` can refuse a value outside them when
a config is read. Models and trainers receive their own section (composition).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "beauty"  # a known name, `synthetic[:k=v,...]`, or a path
    data_dir: str | None = None
    split: Literal["leave_one_out", "temporal", "cold_item"] = "leave_one_out"
    cold_share: float = 0.1
    split_seed: int = 0
    numeric_buckets: int = 8  # quantile buckets of a table's numeric feature columns (0: a token per value)
    # > 0: a Parquet dataset is partitioned on disk into shards of this many users, and training draws its
    # batches one shard at a time (docs/data.md, "Training in user shards"); 0: every example in memory
    shard_users: int = 0


ModelKind = Literal["two_tower", "mfli", "uri", "sci"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind = "two_tower"  # the family a run trains: its section ([mfli], [uri], [sci]) applies
    encoder: Literal["sasrec", "mean"] = "sasrec"  # causal self-attention, or mean pooling
    dim: int = 64
    max_len: int = 50  # the user tower reads the last `max_len` items
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    temperature: float = 0.05
    item_features: bool = True  # add the attribute bag to the item tower
    user_features: bool = True  # add user feature embeddings to the user tower when the data has them
    id_dropout: float = 0.0  # share of items whose ID embedding is dropped per batch (teaches content-only)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 256  # users per batch; every position of their sequences is a training example
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives: Literal["in_batch", "mixed", "full"] = "mixed"  # mixed: in-batch + uniform; full: catalogue
    # infonce: sampled or full softmax; hinge: SCI's triplet hinge over the same negatives, the mean of
    # max(0, margin - s(q, i+) + s(q, i-))
    loss: Literal["infonce", "hinge"] = "infonce"
    margin: float = 0.2  # the hinge's margin on cosine scores
    uniform_negatives: int = 1024  # extra uniformly sampled negatives per batch (mixed)
    logq_correction: bool = True
    frequency_decay: float = 0.05  # streaming frequency estimator's learning rate
    hard_negatives: int = 0  # per example, mined from the current model's top ranks
    hard_negative_every: int = 5  # epochs between mining rounds
    hard_negative_pool: int = 100  # mine among each user's top-N non-target items
    patience: int = 5  # epochs without validation Recall@10 gain before stopping
    eval_every: int = 1
    max_seconds: float = 0.0  # stop once training has run this long, keeping the best epoch (0: no limit)
    seed: int = 0
    threads: int = 2
    device: str = "auto"  # auto (a GPU when torch sees one, else the CPU) | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast, on a GPU only
    # under torchrun: score each rank's queries against every rank's in-batch positives (all-gathered,
    # gradients flowing back), as one process with the global batch would; false: its own batch only
    gather_negatives: bool = True
    checkpoint_every: int = 0  # optimizer steps between checkpoints in the --out folder (0: none)
    checkpoint_minutes: float = 0.0  # also one once this many minutes passed since the last (0: none)


@dataclass(frozen=True)
class MFLIConfig:
    """The multifaceted learnable index (recindex.mfli), trained when `model.kind = "mfli"`."""

    facets: tuple[Literal["joint", "id", "content"], ...] = ("joint", "id", "content")  # one facet each
    # item representation (see mfli.model)
    levels: int = 2
    codewords: int = 16  # per level and facet
    quant_start: int = 5  # epochs of embeddings alone before the first level switches on
    level_gap: int = 2  # epochs between levels
    quant_weight: float = 1.0  # the quantized retrieval loss (0: off, an ablation)
    fit_weight: float = 1.0  # codebook + commitment terms
    overuse_weight: float = 0.01  # over-utilisation penalty
    facet_weights: tuple[float, ...] = ()  # w_f of each facet's losses, e.g. [1, 1, 0.5] (default: 1 each)
    init_from: str = ""  # a two-tower bundle of the same data and model shape to start the towers from
    quant_gradient: Literal["straight_through", "codebook"] = "straight_through"  # where the quantized loss
    # reaches: "straight_through"
    # (codebook and both towers) or "codebook" (the codebook only; the towers learn from L_MF alone)


# What a URI run's index is: learned, or fixed (the two-stage baselines). The semantic-id methods are
# those of recindex.quant.semantic_ids.METHODS (a test holds the two lists together).
URIIndexSource = Literal[
    "learn",
    "sci",
    "bundle",
    "random",
    "kmeans",
    "rq_kmeans",
    "rq_vae",
    "kmeans_balanced",
    "rq_kmeans_balanced",
]


@dataclass(frozen=True)
class URIConfig:
    """URI, the decoder that is both indexer and retriever, and the two-stage generative baselines that
    share its decoder (recindex.uri), trained when `model.kind = "uri"`."""

    k: int = 32  # tokens per layer
    layers: int = 2
    index: URIIndexSource = "learn"  # learn (URI), a semantic-id method (quant.semantic_ids), sci (the
    # consistent index's codes of the encoders, recindex.sci.semantic_ids), or bundle (index_bundle's)
    index_bundle: str = ""  # with index = "bundle": a URI bundle whose learned index the decoder learns
    init_from: str = ""  # a two-tower bundle of the same data for the encoders (default: train one first)
    generate_items: bool = False  # add TIGER's item token so the decoder ranks items itself (two-stage)
    decoder_blocks: int = 2
    layer_epochs: int = 10  # URI: epochs per layer; two-stage: epochs in all
    batch_size: int = 256  # positive (query, item) pairs per batch, plus as many random items
    lr: float = 1e-3
    commit_weight: float = 1.0
    balance_weight: float = 3.0
    adaptive_weight: bool = True  # eq. 10's weights on the balance loss (false: an ablation)
    memory_weight: float = 1.0
    stop_gradient: bool = True  # E-step moves only P_Q and M-step only P_I (false: both move both)
    # "" (the paper: from scratch) | "kmeans": before each layer, the decoder first learns balanced k-means
    # tokens of the items under each parent, then URI's losses take over (ours)
    start_from: Literal["", "kmeans"] = ""
    start_epochs: int = 3  # epochs of that start per layer
    final_epochs: int = 3  # after the last assignment, the query end learns the finished index (the memory
    # loss over every layer; ours: the paper stops at the last layer's assignment)
    # the rows the balance term averages: "random" (the random items alone: an expectation over the
    # catalogue, as eq. 7 writes it) or "all" (positives + random items)
    balance_items: Literal["random", "all"] = "random"
    beam: int = 20  # leaves the beam search keeps (the index's default search parameter)
    ranker_epochs: int = 10  # 0: the ranker is the encoders' two-tower model as it is
    ranker_lr: float = 1e-4
    ranker_random_negatives: int = 9
    sibling_negatives: int = 1  # hard negatives from the positive's sibling leaves (0: an ablation)


@dataclass(frozen=True)
class SCIConfig:
    """SCI's SymmAligner (recindex.sci), trained when `model.kind = "sci"`: the two-tower task loss plus
    the same loss with the towers' inputs swapped. The model and its bundle are the plain two-tower's
    (no new parameters); the consistent index is built from a two-tower bundle whose towers agree
    (`recindex index build BUNDLE --backend ci`)."""

    symmetric_weight: float = 0.0  # lambda on the swapped-input loss (0: the plain two-tower)
    # task (the exact mirror: the task's negatives, read by the query tower) | in_batch (the batch's
    # positives only, logQ-corrected: far cheaper with a full softmax; ours)
    swapped_negatives: Literal["task", "in_batch"] = "task"
    consistency_weight: float = 0.0  # ours, not the paper's: 1 - cos(f_q(I), f_i(I)) over the batch's items


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20, 50, 100)
    exclude_seen: bool = True
    batch_size: int = 1024


@dataclass(frozen=True)
class IndexConfig:
    """[index]: what `recindex index build BUNDLE` builds without `--backend`. Each `[index.NAME]` table
    holds settings of one backend (its spec's fields: `[index.ci] nlist = 128`), typed by the
    `check_index` the composition root hands to `load_config` (this module knows no backend)."""

    backend: str = ""  # a spec ("faiss:HNSW32", "ci", "ci:nlist=8"; its values win over its table's)
    search: dict[str, int | float | str | bool] = field(default_factory=dict)  # default search parameters
    # Every build checks itself against exact search (recindex.pipelines.self_check):
    check_queries: int = 500  # sample queries (the bundle's validation users); 0: no check
    warn_recall: float = 0.9  # index recall@100 below which the build warns and suggests a parameter
    min_recall: float = 0.0  # below this the build fails and stores nothing (0: never fails)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)  # NAME -> its [index.NAME] table

    def to_dict(self) -> dict[str, Any]:  # the TOML form: the tables beside the section's own keys
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "backends"}
        return {**own, "search": dict(self.search), **self.backends}


IndexCheck = Callable[[IndexConfig, str], IndexConfig]  # (section, where) -> the section, typed


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mfli: MFLIConfig = field(default_factory=MFLIConfig)
    uri: URIConfig = field(default_factory=URIConfig)
    sci: SCIConfig = field(default_factory=SCIConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "index": self.index.to_dict()}

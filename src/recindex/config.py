"""Run configuration: frozen dataclasses <- a TOML file <- `--set section.key=value` overrides.

Models and trainers receive their own section (composition): nothing reads a global config object.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from recindex.errors import RecIndexError


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "beauty"  # a known name, `synthetic[:k=v,...]`, or a path
    data_dir: str | None = None
    split: Literal["leave_one_out", "temporal", "cold_item"] = "leave_one_out"
    cold_share: float = 0.1
    split_seed: int = 0
    numeric_buckets: int = 8  # quantile buckets of a table's numeric feature columns (0: a token per value)


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
    (no new parameters); the consistent index is built from any two-tower bundle
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
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)  # NAME -> its [index.NAME] table

    def to_dict(self) -> dict[str, Any]:  # the TOML form: the tables beside backend and search
        return {"backend": self.backend, "search": dict(self.search), **self.backends}


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


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """`value` as the field's type, or an error that says what was expected."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise RecIndexError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        if isinstance(value, str):  # the comma-separated form of configs written before lists
            value = [part.strip() for part in value.split(",") if part.strip()]
            value = [_number(part) for part in value] if get_args(annotation)[0] is not str else value
        if not isinstance(value, list | tuple):
            raise RecIndexError(f"{where}: expected a list, got {value!r}")
        element = get_args(annotation)[0]
        return tuple(_coerce(item, element, f"{where}[{i}]") for i, item in enumerate(value))
    if value is None and type(None) in get_args(annotation):
        return None
    if origin is dict or dict in map(get_origin, get_args(annotation)):
        return _table(value, annotation, where)
    kind = next((k for k in (bool, int, float, str) if annotation is k or k in get_args(annotation)), None)
    if kind is None:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecIndexError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


coerce_value = _coerce  # the typed index specs read their values with it


def _table(value: Any, annotation: Any, where: str) -> dict[str, Any]:
    """A table whose values are of the annotation's value type (one type or a union)."""
    table = next(a for a in (annotation, *get_args(annotation)) if get_origin(a) is dict)
    kinds = get_args(get_args(table)[1]) or (get_args(table)[1],)
    if not isinstance(value, dict):
        raise RecIndexError(f"{where}: expected a table, got {value!r}")
    for key, item in value.items():
        if Any not in kinds and not isinstance(item, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise RecIndexError(f"{where}.{key}: expected {names}, got {item!r}")
    return dict(value)


def _number(text: str) -> Any:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text  # left for the element's own check to refuse, with its name


def _section(cls, values: dict[str, Any], where: str):
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise RecIndexError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(known)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def _index_section(values: dict[str, Any], where: str, check_index: IndexCheck | None) -> IndexConfig:
    """[index]: backend, search, and every other key a backend's table (typed by `check_index`)."""
    own = {k: v for k, v in values.items() if k in ("backend", "search")}
    tables = {k: v for k, v in values.items() if k not in own}
    for name in (name for name, table in tables.items() if not isinstance(table, dict)):
        raise RecIndexError(f"{where} [index]: unknown key {name!r}; valid: backend, search, [index.BACKEND]")
    section = dataclasses.replace(_section(IndexConfig, own, f"{where} [index]"), backends=tables)
    return check_index(section, where) if check_index is not None else section


def from_dict(
    raw: dict[str, Any], where: str = "config", check_index: IndexCheck | None = None
) -> ExperimentConfig:
    """The config of `raw`; without `check_index` the [index] tables are checked where they are used."""
    raw = _with_model_kind(raw, where)
    sections = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
    unknown = set(raw) - set(sections)
    if unknown:
        raise RecIndexError(f"{where}: unknown section(s) {sorted(unknown)}; valid: {sorted(sections)}")
    hints = get_type_hints(ExperimentConfig)
    built = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise RecIndexError(f"{where}: [{name}] must be a table")
        if name == "index":
            built[name] = _index_section(values, where, check_index)
            continue
        built[name] = _section(hints[name], values, f"{where} [{name}]")
    config = ExperimentConfig(**built)
    _check_family(config, where)
    return config


# Settings whose older forms are still read (see _with_model_kind): the family switches, and a URI
# bundle's folder in uri.index.
LEGACY_FORMS = {("mfli", "enabled"), ("uri", "enabled"), ("uri", "index")}


def _with_model_kind(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Configs (and bundle manifests) written before `model.kind` switched families on with
    `[mfli] enabled`, `[uri] enabled`, or a positive SCI weight, and named a URI bundle in `uri.index`:
    read them as what they meant."""
    raw = {name: dict(values) if isinstance(values, dict) else values for name, values in raw.items()}
    sections = {name: values for name, values in raw.items() if isinstance(values, dict)}
    enabled = [name for name in ("mfli", "uri") if sections.get(name, {}).pop("enabled", False)]
    uri = sections.get("uri", {})
    if isinstance(uri.get("index"), str) and uri["index"] not in get_args(URIIndexSource):
        # `uri.index` once named a URI bundle's folder as well as a method
        uri["index_bundle"], uri["index"] = uri["index"], "bundle"
    model = sections.get("model", {})
    if "kind" in model:
        if enabled and enabled != [model["kind"]]:
            raise RecIndexError(f"{where}: [{enabled[0]}] enabled contradicts model.kind = {model['kind']!r}")
        return raw
    if len(enabled) > 1:
        raise RecIndexError(f"{where}: [mfli] and [uri] are both enabled; a run trains one of them")
    sci = sections.get("sci", {})
    symmetric = any(
        isinstance(sci.get(key), int | float) and sci[key] > 0
        for key in ("symmetric_weight", "consistency_weight")
    )
    kind = enabled[0] if enabled else "sci" if symmetric else None
    if kind is not None:
        raw["model"] = {**model, "kind": kind}
    return raw


def _check_family(config: ExperimentConfig, where: str) -> None:
    sci = config.sci
    symmetric = sci.symmetric_weight > 0 or sci.consistency_weight > 0
    if config.model.kind == "sci" and not symmetric:
        raise RecIndexError(
            f"{where}: model.kind = \"sci\" trains with sci.symmetric_weight > 0 "
            "or sci.consistency_weight > 0"
        )
    if symmetric and config.model.kind != "sci":
        raise RecIndexError(
            f"{where}: [sci] training applies to the plain two-tower model (model.kind = \"sci\"), "
            f"not to model.kind = {config.model.kind!r}"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.001` -> (['train', 'lr'], 0.001). Values are TOML; bare words are strings."""
    if "=" not in text:
        raise RecIndexError(f"--set {text!r}: expected section.key=value, e.g. train.lr=0.001")
    key, value = text.split("=", 1)
    path = key.strip().split(".")
    nested = len(path) == 3 and path[0] == "index"  # index.NAME.key: a setting of one backend's table
    if (len(path) != 2 and not nested) or not all(path):
        raise RecIndexError(f"--set {text!r}: the key must be section.key, e.g. model.dim")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return path, parsed


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, check_index: IndexCheck | None = None
) -> ExperimentConfig:
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise RecIndexError(f"config file {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise RecIndexError(f"{path}: invalid TOML: {error}") from None
    for text in overrides or []:
        keys, value = parse_override(text)
        if len(keys) == 3:  # index.NAME.key: checked with the whole [index] section
            raw.setdefault("index", {}).setdefault(keys[1], {})[keys[2]] = value
            continue
        section, key = keys
        raw.setdefault(section, {})[key] = _checked_override(text, section, key, value)
    return from_dict(raw, where, check_index)


def _checked_override(text: str, section: str, key: str, value: Any) -> Any:
    """The value of one `--set`, checked against the known settings, so that a typo in it is reported
    as the override's, not as the config file's."""
    def unknown(what: str, name: str, known: list[str]) -> RecIndexError:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return RecIndexError(f"--set {text!r}: unknown {what}{hint}; valid: {', '.join(known)}")

    sections = get_type_hints(ExperimentConfig)
    if section not in sections:
        raise unknown(f"section {section!r}", section, list(sections))
    hints = get_type_hints(sections[section])
    if (section, key) in LEGACY_FORMS:
        return value  # from_dict reads it as what it meant, then checks it
    if section == "index" and key not in hints:
        return value  # a whole [index.NAME] table: checked with the section
    if key not in hints:
        raise unknown(f"key {key!r} in [{section}]", key, list(hints))
    return _coerce(value, hints[key], f"--set {text!r}")

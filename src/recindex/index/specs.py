"""Typed index specs: one frozen dataclass per backend, filled from a spec string or a config table.

A spec string is `NAME` or `NAME:REST`. What REST means is the spec class's grammar:

    exact:float16              one field (POSITIONAL) takes the whole text: exact's storage, faiss's
    faiss:IVF1024,Flat         factory string, milvus's index type
    ci:nlist=128,levels=2      key=value pairs over the spec's fields (the learned backends)
    sharded:4:faiss:HNSW32     the shard count, then the inner spec (ShardedSpec's own grammar);
    sharded:by=region:exact    or the partition attribute, then the inner spec

Values are read through the fields' types (the run config's `coerce_value`): a wrong value or an
unknown key is refused, naming the allowed ones. Fields a string cannot carry (faiss's
ef_construction, milvus's uri) come from build options or the `[index.NAME]` table of the run config.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from recindex.config import IndexConfig, coerce_value
from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.attribute_values import NAME

SpecTable = Mapping[str, type["IndexSpec"]]  # backend name -> its spec class


@dataclass(frozen=True)
class IndexSpec:
    """The base of every backend's spec: its grammar, and typed reading of values into its fields."""

    NAME: ClassVar[str] = ""
    POSITIONAL: ClassVar[str | None] = None  # the field the text after `NAME:` sets; None: key=value

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str, base: IndexSpec | None = None) -> IndexSpec:
        """The spec with `values` (already typed, as TOML or Python gives them) over `base`'s."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise InvalidRequest(
                f"{where}: unknown key {', '.join(map(repr, unknown))}; "
                f"expected one of {', '.join(cls.field_names()) or 'none (this backend takes no settings)'}"
            )
        hints = get_type_hints(cls)
        try:
            typed = {key: coerce_value(value, hints[key], f"{where}: {key}") for key, value in values.items()}
        except RecIndexError as error:  # the config's error, as the index package's
            raise InvalidRequest(str(error)) from None
        for key, value in typed.items():  # counts, sizes and seeds: a negative one is a typo
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise InvalidRequest(f"{where}: {key} must be 0 or more, got {value}")
        return dataclasses.replace(base if base is not None else cls(), **typed)

    @classmethod
    def from_text(cls, rest: str, where: str, base: IndexSpec | None = None) -> IndexSpec:
        """The spec a string's text after `NAME:` gives, over `base`'s values."""
        if not rest:
            return base if base is not None else cls()
        if cls.POSITIONAL is not None:
            return cls.from_values({cls.POSITIONAL: rest}, where, base)
        if not cls.field_names():
            raise InvalidRequest(f"{where}: the {cls.NAME} backend takes no spec options")
        hints = get_type_hints(cls)
        values = {}
        for part in filter(None, rest.split(",")):
            key, sep, text = part.partition("=")
            if not sep or not text:
                expected = ",".join(f"{k}=VALUE" for k in cls.field_names())
                raise InvalidRequest(f"{where}: expected {expected} (any of them), got {part!r}")
            values[key] = _text_value(text, hints.get(key, str))
        return cls.from_values(values, where, base)

    def text(self) -> str:
        """The spec string of this spec (the fields a string carries, where they differ from default)."""
        default = type(self)()
        if self.POSITIONAL is not None:
            value = getattr(self, self.POSITIONAL)
            return self.NAME if value == getattr(default, self.POSITIONAL) else f"{self.NAME}:{value}"
        changed = [key for key in self.field_names() if getattr(self, key) != getattr(default, key)]
        pairs = [f"{key}={getattr(self, key)}" for key in changed]
        return f"{self.NAME}:{','.join(pairs)}" if pairs else self.NAME

    def arguments(self) -> dict[str, Any]:
        """The index class's keyword arguments this spec sets."""
        return {key: getattr(self, key) for key in self.field_names()}

    def check(self) -> None:
        """Refuse a spec that cannot make an index (a value a default cannot stand in for is missing)."""

    def nested(self) -> tuple[str, ...]:
        """Spec strings inside this one, checked with it."""
        return ()


def _text_value(text: str, annotation: Any) -> Any:
    """A value as written in a spec string: the text itself for a string field, else a TOML value."""
    choices = get_args(annotation) if get_origin(annotation) is Literal else ()
    if annotation is str or str in get_args(annotation) or all(isinstance(c, str) for c in choices or [0]):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # refused by the field's type, with its name


ExactStorage = Literal["float32", "float16", "int8"]


@dataclass(frozen=True)
class ExactSpec(IndexSpec):
    NAME: ClassVar[str] = "exact"
    POSITIONAL: ClassVar[str | None] = "storage"
    storage: ExactStorage = "float32"  # int8 keeps a per-dimension scale


@dataclass(frozen=True)
class FaissSpec(IndexSpec):
    NAME: ClassVar[str] = "faiss"
    POSITIONAL: ClassVar[str | None] = "factory"
    factory: str = ""  # any FAISS index-factory string: HNSW32, IVF1024,Flat, OPQ16,IVF1024,PQ16, ...
    ef_construction: int = 200  # HNSW graphs
    train_size: int | None = None  # vectors IVF/PQ train on (default: the first add's)
    kmeans_iterations: int = 10  # Lloyd iterations of the IVF coarse k-means (FAISS's default: 25)

    def check(self) -> None:
        if not self.factory:
            raise InvalidRequest("faiss needs a factory string, e.g. faiss:HNSW32 or faiss:IVF1024,Flat")


def ivf_lists_for(n_items: int) -> int:
    """Inverted lists for a catalogue of `n_items`: the power of two nearest 4 sqrt(n), at most 4,096,
    and few enough that FAISS's k-means has its 39 training points per list (1,024 at 100k, 4,096 at
    1M, 256 at 12k)."""
    if n_items < 39:
        raise InvalidRequest(f"an IVF index needs at least 39 items, got {n_items}")
    return int(min(4096, 2 ** round(math.log2(4 * math.sqrt(n_items))), 2 ** int(math.log2(n_items / 39))))


def fast_scan_lists_for(n_items: int) -> int:
    """Inverted lists for the recommended fast-scan IVF: the power of two nearest 2 sqrt(n), and no
    more than `ivf_lists_for` gives (512 at 100k, 2,048 at 1M, 4,096 from about 3M).

    Half as many lists as a float IVF: 4-bit codes make a list cheap to scan, so longer lists cost
    little at search time, and the coarse k-means (most of the build) costs a quarter. At 1M items,
    2,048 lists reached recall@100 0.965 at nprobe 64 where 4,096 lists needed nprobe 128 for 0.970,
    with a build a third as long (docs/indexes.md, "Which index for ~1M items").
    """
    return int(min(2 ** round(math.log2(2 * math.sqrt(max(n_items, 1)))), ivf_lists_for(n_items)))


def recommended_faiss(n_items: int, dim: int) -> str:
    """The FAISS spec recommended for `n_items` vectors of `dim` dimensions (docs/indexes.md, "Which
    index"): IVF lists of 4-bit PQ codes of the residuals, one code per dimension, scanned with SIMD
    (fast-scan), and the best k x k_factor re-scored exactly from the stored float32 vectors."""
    return f"faiss:IVF{fast_scan_lists_for(n_items)},PQ{dim}x4fsr,RFlat"


@dataclass(frozen=True)
class OnDiskFaissSpec(FaissSpec):
    """A FAISS IVF index whose inverted lists live in a file (recindex.index.faiss_ondisk)."""

    NAME: ClassVar[str] = "faiss_ondisk"
    factory: str = "IVF1024,PQ16"  # an IVF factory string with plain lists: IVF4096,PQ16, IVF1024,Flat
    work_dir: str | None = None  # where the lists file lives until it is saved (default: the temp folder)


@dataclass(frozen=True)
class MilvusSpec(IndexSpec):
    NAME: ClassVar[str] = "milvus"
    POSITIONAL: ClassVar[str | None] = "index_type"
    index_type: str = "AUTOINDEX"  # HNSW, IVF_FLAT, IVF_PQ, FLAT, ... (Milvus checks the name)
    uri: str = "recindex_milvus.db"  # a server (http://milvus:19530) or a Milvus Lite file
    collection: str = "recindex_items"
    index_params: dict[str, Any] | None = None  # Milvus build parameters, e.g. {M = 16}
    partition_key: str = ""  # an attribute that becomes the collection's partition key (milvus.partition_key)


@dataclass(frozen=True)
class ShardedSpec(IndexSpec):
    """`sharded:N:INNER`: N shards by hash of the item id; `sharded:by=ATTRIBUTE:INNER`: one partition
    per value of an item attribute (recindex.index.partitioned)."""

    NAME: ClassVar[str] = "sharded"
    shards: int = 0
    inner: str = ""  # the spec of every shard
    by: str = ""  # the partition attribute; "" when shards are by hash

    @classmethod
    def from_text(cls, rest: str, where: str, base: IndexSpec | None = None) -> IndexSpec:
        if not rest:
            return base if base is not None else cls()
        head, _, inner = rest.partition(":")
        if head.startswith("by=") and inner:
            return cls.from_values({"by": head.removeprefix("by="), "inner": inner, "shards": 0}, where, base)
        if not head.isdigit() or not inner:
            expected = "sharded:N:INNER or sharded:by=ATTRIBUTE:INNER (e.g. sharded:4:faiss:HNSW32)"
            raise InvalidRequest(f"sharded spec is {expected}, got {where}")
        return cls.from_values({"shards": int(head), "inner": inner, "by": ""}, where, base)

    def text(self) -> str:
        return f"sharded:by={self.by}:{self.inner}" if self.by else f"sharded:{self.shards}:{self.inner}"

    def check(self) -> None:
        if self.by:
            if not NAME.match(self.by) or self.shards:
                raise InvalidRequest(
                    f"a partitioned spec names one attribute (an identifier) and no shard count, got "
                    f"by={self.by!r}, shards={self.shards}"
                )
            if not self.inner or self.inner.split(":")[0] in ("milvus", "sharded"):
                raise InvalidRequest(
                    f"partitions hold an in-process index (exact, faiss, ...), got {self.inner!r}; "
                    "a Milvus collection partitions itself: milvus with partition_key=ATTRIBUTE"
                )
            return
        if self.shards < 1 or not self.inner:
            raise InvalidRequest(f"sharded needs shards >= 1 and an inner spec, got {self.text()!r}")

    def nested(self) -> tuple[str, ...]:
        return (self.inner,) if self.inner else ()


CORE_SPECS: dict[str, type[IndexSpec]] = {
    spec.NAME: spec for spec in (ExactSpec, FaissSpec, OnDiskFaissSpec, MilvusSpec, ShardedSpec)
}


def spec_class(name: str, specs: SpecTable) -> type[IndexSpec]:
    if name not in specs:
        raise InvalidRequest(f"unknown index backend {name!r}; choose one of {', '.join(specs)}")
    return specs[name]


def parse_spec(
    text: str, specs: SpecTable, tables: Mapping[str, Mapping[str, Any]] | None = None
) -> IndexSpec:
    """The typed spec of a spec string, over its backend's table in `tables` (the run config's) when
    there is one."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("an index spec is a non-empty string such as 'exact' or 'faiss:HNSW32'")
    name, _, rest = text.strip().partition(":")
    cls = spec_class(name, specs)
    table = (tables or {}).get(name)
    base = cls.from_values(table, f"[index.{name}]") if table else None
    spec = cls.from_text(rest, repr(text.strip()), base)
    for inner in spec.nested():
        parse_spec(inner, specs)
    return spec


def check_index_config(section: IndexConfig, where: str, specs: SpecTable) -> IndexConfig:
    """The [index] section with every backend table read through its spec, and its backend's spec
    checked; refuses unknown backends, keys and values, naming what is allowed."""
    tables = {}
    for name, table in section.backends.items():
        if name not in specs:
            raise InvalidRequest(
                f"{where}: [index.{name}] is no index backend; the tables are {', '.join(specs)}"
            )
        spec = specs[name].from_values(table, f"{where} [index.{name}]")
        tables[name] = {key: getattr(spec, key) for key in table}
    if section.backend:
        try:
            parse_spec(section.backend, specs, tables)
        except InvalidRequest as error:
            raise InvalidRequest(f"{where} [index] backend: {error}") from None
    return dataclasses.replace(section, backends=tables)


def spec_of_config(section: IndexConfig, specs: SpecTable) -> IndexSpec | None:
    """The spec the [index] section asks for (None: it names no backend)."""
    return parse_spec(section.backend, specs, section.backends) if section.backend else None

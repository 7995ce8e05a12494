"""Item attributes stored by slot, column by column, for filtering inside in-process indexes.

Four kinds of column: `str` (dictionary-encoded: int32 codes into a vocabulary, so equality and `in`
are integer comparisons), `num` (float64; integers are exact up to 2**53), `bool`, and `str_list`, a
multi-valued attribute (an item's genres or categories): a (slots, width) matrix of codes into one
vocabulary, -1 padded, whose width grows to the longest list seen. A missing value is code -1 / NaN /
-1 / an all -1 row, and never matches a comparison. A comparison on a `str_list` asks about any of the
item's values (filters.py states the semantics). Columns are plain numpy arrays, so a store saves to
.npy files without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.attribute_values import (
    LISTS,
    MAX_STRING_CHARS,
    NAME,
    ValueLists,
    check_text,
    distinct_rows,
    flatten_lists,
)

MAX_ATTRIBUTES = 64


def attribute_rows(attributes: Mapping[str, Sequence] | None, mask: np.ndarray) -> dict[str, list] | None:
    """The rows of name -> values where `mask` is True (None stays None)."""
    if not attributes:
        return None
    if mask.all():
        return dict(attributes)
    rows = np.flatnonzero(mask)
    return {
        name: values.take(rows) if isinstance(values, ValueLists) else [values[i] for i in rows]
        for name, values in attributes.items()
    }


@dataclass
class Column:
    kind: str  # "str" | "num" | "bool" | "str_list"
    values: np.ndarray  # str: int32 codes, num: float64, bool: int8 (-1 = missing), str_list: (n, w) int32
    vocabulary: list[str] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)

    def code(self, text: str) -> int:
        code = self.codes.get(text)
        if code is None:
            code = self.codes[text] = len(self.vocabulary)
            self.vocabulary.append(text)
        return code


_MISSING = {"str": -1, "num": np.nan, "bool": -1, "str_list": -1}
_DTYPES = {"str": np.int32, "num": np.float64, "bool": np.int8, "str_list": np.int32}


def _kind_of(name: str, values: Sequence) -> str:
    if isinstance(values, ValueLists):
        return "str_list"
    array = values if isinstance(values, np.ndarray) else _as_array(values)
    if array is not None and array.ndim == 1:
        if array.dtype.kind in "iuf":
            return "num"
        if array.dtype.kind == "b":
            return "bool"
    kinds = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool | np.bool_):
            kinds.add("bool")
        elif isinstance(value, int | float | np.integer | np.floating):
            kinds.add("num")
        elif isinstance(value, str):
            kinds.add("str")
        elif isinstance(value, LISTS):
            kinds.add("str_list")
        else:
            raise InvalidRequest(
                f"attribute {name!r}: values must be strings, numbers, booleans or lists of strings, "
                f"got {type(value).__name__}"
            )
    if kinds == {"str", "str_list"}:
        return "str_list"  # a single string is a set of one
    if len(kinds) > 1:
        raise InvalidRequest(f"attribute {name!r} mixes {' and '.join(sorted(kinds))} values")
    return kinds.pop() if kinds else "num"


def _as_array(values: Sequence) -> np.ndarray | None:
    """The values as one numpy array (fast for a list of numbers); None for ragged lists."""
    try:
        return np.asarray(values)
    except ValueError:
        return None


class AttributeStore:
    """Attribute columns aligned with an index's slots (grows with them)."""

    def __init__(self) -> None:
        self.columns: dict[str, Column] = {}
        self.capacity = 0

    @property
    def schema(self) -> dict[str, str]:
        return {name: column.kind for name, column in self.columns.items()}

    def reserve(self, n: int) -> None:
        if n <= self.capacity:
            return
        capacity = max(n, 2 * self.capacity, 1024)
        for column in self.columns.values():
            grown = np.full((capacity, *column.values.shape[1:]), _MISSING[column.kind], _DTYPES[column.kind])
            grown[: self.capacity] = column.values[: self.capacity]
            column.values = grown
        self.capacity = capacity

    def set(self, slots: np.ndarray, attributes: Mapping[str, Sequence] | None) -> None:
        """Write the attributes of the items at `slots`, clearing whatever those slots held before."""
        self.reserve(int(slots.max()) + 1 if len(slots) else 0)
        for column in self.columns.values():
            column.values[slots] = _MISSING[column.kind]
        if not attributes:
            return
        if not isinstance(attributes, Mapping):
            raise InvalidRequest("attributes must be a mapping of name -> one value per item")
        for name, values in attributes.items():
            self._set_column(name, slots, values)

    def _set_column(self, name: str, slots: np.ndarray, values: Sequence) -> None:
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidRequest(f"attribute name {name!r} must be an identifier of at most 64 characters")
        if isinstance(values, str | bytes) or len(values) != len(slots):
            raise InvalidRequest(f"attribute {name!r} needs one value per item ({len(slots)})")
        kind = _kind_of(name, values)
        column = self.columns.get(name)
        if column is None:
            if len(self.columns) >= MAX_ATTRIBUTES:
                raise InvalidRequest(f"at most {MAX_ATTRIBUTES} attributes per index")
            shape = (self.capacity, 1) if kind == "str_list" else (self.capacity,)
            column = Column(kind, np.full(shape, _MISSING[kind], _DTYPES[kind]))
            self.columns[name] = column
        # A string goes into a multi-valued column as a set of one; values that are all None fit anywhere.
        fits = column.kind == kind or (column.kind, kind) == ("str_list", "str")
        if not fits and any(v is not None for v in values):
            raise InvalidRequest(f"attribute {name!r} holds {column.kind} values, got {kind} values")
        if column.kind == "str_list":
            self._set_lists(name, column, slots, values)
        elif column.kind == "str":
            codes = []
            for value in values:
                if value is not None and len(value) > MAX_STRING_CHARS:
                    raise InvalidRequest(f"attribute {name!r}: values are at most {MAX_STRING_CHARS} chars")
                codes.append(-1 if value is None else column.code(str(value)))
            column.values[slots] = codes
        elif column.kind == "bool":
            column.values[slots] = [-1 if v is None else int(bool(v)) for v in values]
        else:
            numbers = np.asarray([np.nan if v is None else v for v in values], np.float64)
            if np.isinf(numbers).any():
                raise InvalidRequest(f"attribute {name!r}: values must be finite numbers")
            column.values[slots] = numbers

    def _set_lists(self, name: str, column: Column, slots: np.ndarray, values: Sequence) -> None:
        # Vectorised over all values at once: a catalogue of a million items with a few categories each
        # must not take a Python call per value.
        if isinstance(values, ValueLists):
            for text in values.vocabulary:
                check_text(name, text)
            ours = np.asarray([column.code(text) for text in values.vocabulary], np.int32)
            lengths, codes = np.diff(values.offsets), ours[values.codes]
        else:
            lengths, flat = flatten_lists(name, values)
            for text in dict.fromkeys(flat):
                column.code(text)
            codes = np.fromiter(map(column.codes.__getitem__, flat), np.int32, len(flat))
        matrix = distinct_rows(name, lengths, codes)
        if matrix.shape[1] > column.values.shape[1]:
            wider = np.full((len(column.values), matrix.shape[1]), -1, np.int32)
            wider[:, : column.values.shape[1]] = column.values
            column.values = wider
        elif matrix.shape[1] < column.values.shape[1]:
            narrow = matrix.shape[1]
            matrix = np.pad(matrix, ((0, 0), (0, column.values.shape[1] - narrow)), constant_values=-1)
        column.values[slots] = matrix

    def clear(self, slots: np.ndarray) -> None:
        for column in self.columns.values():
            column.values[slots[slots < self.capacity]] = _MISSING[column.kind]

    def _column(self, name: str) -> Column:
        column = self.columns.get(name)
        if column is None:
            known = ", ".join(sorted(self.columns)) or "none"
            raise InvalidRequest(f"filter uses unknown attribute {name!r} (this index has: {known})")
        return column

    def present(self, name: str, n: int) -> np.ndarray:
        column = self._column(name)
        values = self._head(column, n)
        if column.kind == "str_list":
            return values[:, 0] >= 0  # lists are packed from the left
        return ~np.isnan(values) if column.kind == "num" else values >= 0

    def _head(self, column: Column, n: int) -> np.ndarray:
        if n <= self.capacity:
            return column.values[:n]
        padding = np.full((n - self.capacity, *column.values.shape[1:]), _MISSING[column.kind])
        return np.concatenate([column.values, padding.astype(column.values.dtype)])

    def member(self, name: str, values: Sequence, n: int) -> np.ndarray:
        """Items with a value among `values` (`in`): one pass over the column for the whole list."""
        column = self._column(name)
        if column.kind not in ("str", "str_list"):
            mask = np.zeros(n, bool)
            for value in values:
                mask |= self.compare(name, "==", value, n)
            return mask
        for value in values:
            if not isinstance(value, str):
                raise InvalidRequest(f"attribute {name!r} holds strings; compared with {value!r}")
        codes = [column.codes[value] for value in values if value in column.codes]
        matched = np.isin(self._head(column, n), codes)
        return matched.any(axis=1) if column.kind == "str_list" else matched

    def compare(self, name: str, op: str, value, n: int) -> np.ndarray:
        column = self._column(name)
        values = self._head(column, n)
        if column.kind in ("str", "str_list"):
            if not isinstance(value, str):
                raise InvalidRequest(f"attribute {name!r} holds strings; compared with {value!r}")
            code = column.codes.get(value, -2)  # -2 matches nothing, not even missing values
            equal = values == code
            if column.kind == "str_list":
                equal = equal.any(axis=1)  # any of the item's values (filters.py)
            return equal if op == "==" else ~equal & self.present(name, n)
        if column.kind == "bool":
            if not isinstance(value, bool):
                raise InvalidRequest(f"attribute {name!r} holds true/false; compared with {value!r}")
            return (values == int(value)) if op == "==" else (values == int(not value))
        if isinstance(value, str | bool):
            raise InvalidRequest(f"attribute {name!r} holds numbers; compared with {value!r}")
        with np.errstate(invalid="ignore"):
            result = {
                "==": values == value,
                "!=": (values != value) & ~np.isnan(values),
                "<": values < value,
                "<=": values <= value,
                ">": values > value,
                ">=": values >= value,
            }[op]
        return result

    def rows(self, slots: np.ndarray) -> dict[str, list]:
        """The attributes of `slots` as name -> list (None where missing): the form `add` takes."""
        out: dict[str, list] = {}
        for name, column in self.columns.items():
            values = column.values[slots]
            if column.kind == "str_list":
                lists = [[column.vocabulary[c] for c in row if c >= 0] for row in values.tolist()]
                out[name] = [row or None for row in lists]
            elif column.kind == "str":
                out[name] = [None if c < 0 else column.vocabulary[c] for c in values.tolist()]
            elif column.kind == "bool":
                out[name] = [None if v < 0 else bool(v) for v in values.tolist()]
            else:
                out[name] = [None if np.isnan(v) else v for v in values.tolist()]
        return out

    def take(self, slots: np.ndarray) -> AttributeStore:
        """A new store whose slot i holds what slot `slots[i]` holds here (for compaction)."""
        store = AttributeStore()
        store.capacity = len(slots)
        for name, column in self.columns.items():
            store.columns[name] = Column(
                column.kind, column.values[slots].copy(), list(column.vocabulary), dict(column.codes)
            )
        return store

    def save(self, folder: Path, n: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        schema = {}
        for index, (name, column) in enumerate(self.columns.items()):
            np.save(folder / f"attr_{index}.npy", self._head(column, n), allow_pickle=False)
            schema[name] = {"kind": column.kind, "file": f"attr_{index}.npy", "vocabulary": column.vocabulary}
        (folder / "attributes.json").write_text(json.dumps(schema), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> AttributeStore:
        store = cls()
        path = folder / "attributes.json"
        if not path.is_file():
            return store
        schema = json.loads(path.read_text(encoding="utf-8"))
        for name, spec in schema.items():
            values = np.load(folder / spec["file"], allow_pickle=False).astype(_DTYPES[spec["kind"]])
            vocabulary = list(spec["vocabulary"])
            store.columns[name] = Column(
                spec["kind"], values, vocabulary, {text: i for i, text in enumerate(vocabulary)}
            )
            store.capacity = len(values)
        return store

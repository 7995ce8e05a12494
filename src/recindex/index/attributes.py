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
from itertools import chain
from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest

MAX_ATTRIBUTES = 64
MAX_STRING_CHARS = 1024
MAX_VALUES = 256  # values of one multi-valued attribute per item (Milvus ARRAY capacity)


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
_LISTS = (list, tuple, set, frozenset)


class ValueLists(Sequence):
    """A multi-valued column in compact form: item i's values are
    `vocabulary[codes[offsets[i]:offsets[i + 1]]]`. It reads as a sequence of lists (None for none), so
    any backend takes it; the in-process store ingests it without a Python call per value, which is
    what keeps a catalogue of a million items quick to index."""

    def __init__(self, offsets: np.ndarray, codes: np.ndarray, vocabulary: Sequence[str]):
        self.offsets = np.asarray(offsets, np.int64)
        self.codes = np.asarray(codes, np.int64)
        self.vocabulary = list(vocabulary)
        if len(self.offsets) < 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.codes):
            raise ValueError("offsets must run from 0 to len(codes)")
        if len(self.codes) and not 0 <= self.codes.min() <= self.codes.max() < len(self.vocabulary):
            raise ValueError("codes must index the vocabulary")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> ValueLists:
        """The lists of `rows`, in that order, still compact."""
        starts, lengths = self.offsets[rows], np.diff(self.offsets)[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return ValueLists(offsets, self.codes[np.repeat(starts, lengths) + within], self.vocabulary)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        item = int(item)
        if not -len(self) <= item < len(self):
            raise IndexError(item)
        item %= len(self)
        codes = self.codes[self.offsets[item] : self.offsets[item + 1]].tolist()
        return [self.vocabulary[c] for c in codes] or None


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
        elif isinstance(value, _LISTS):
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


def _flatten(name: str, values: Sequence) -> tuple[np.ndarray, list[str]]:
    """Values of a multi-valued attribute (lists, single strings, None) as lengths and one flat list."""
    lists = []
    for value in values:
        if value is None or isinstance(value, str):
            lists.append(() if value is None else (value,))
        elif isinstance(value, _LISTS):
            lists.append(value)
        else:
            raise InvalidRequest(f"attribute {name!r} holds lists of strings; got {value!r}")
    flat = list(chain.from_iterable(lists))
    bad = next((text for text in flat if not isinstance(text, str)), None)
    if bad is not None:
        _check_text(name, bad)
    for text in dict.fromkeys(flat):
        _check_text(name, text)
    return np.fromiter(map(len, lists), np.int64, len(lists)), flat


def _check_text(name: str, text) -> None:
    if not isinstance(text, str):
        raise InvalidRequest(f"attribute {name!r}: a list holds strings only, got {text!r}")
    if len(text) > MAX_STRING_CHARS:
        raise InvalidRequest(f"attribute {name!r}: values are at most {MAX_STRING_CHARS} chars")


def _distinct_rows(name: str, lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Codes per row (CSR: lengths, codes) as a -1 padded matrix, each code once in its first place."""
    long = lengths > MAX_VALUES
    if long.any():  # rare: dedupe these rows first, so that no matrix is sized by a row of repeats
        pieces = np.split(codes, np.cumsum(lengths)[:-1])
        for row in np.flatnonzero(long).tolist():
            pieces[row] = np.asarray(list(dict.fromkeys(pieces[row].tolist())), codes.dtype)
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        codes = np.concatenate(pieces) if pieces else codes
    width = int(lengths.max()) if len(lengths) else 0
    matrix = np.full((len(lengths), width), -1, np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    matrix[rows, np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = codes
    # Repeats show as equal neighbours once each row is sorted; only those rows are rewritten.
    ordered = np.sort(matrix, axis=1)
    repeats = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)
    for row in np.flatnonzero(repeats).tolist():
        kept = list(dict.fromkeys(c for c in matrix[row].tolist() if c >= 0))
        matrix[row] = -1
        matrix[row, : len(kept)] = kept
    width = int((matrix >= 0).sum(axis=1).max()) if len(matrix) else 0
    if width > MAX_VALUES:
        raise InvalidRequest(f"attribute {name!r}: at most {MAX_VALUES} values per item, got {width}")
    return matrix[:, :width]


def value_set(name: str, value) -> list[str] | None:
    """One item's values of a multi-valued attribute: distinct strings in their order (None if none)."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, _LISTS):
        raise InvalidRequest(f"attribute {name!r} holds lists of strings; got {value!r}")
    for text in values:
        _check_text(name, text)
    distinct = list(dict.fromkeys(values))
    if len(distinct) > MAX_VALUES:
        raise InvalidRequest(f"attribute {name!r}: at most {MAX_VALUES} values per item, got {len(distinct)}")
    return distinct or None


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
        from recindex.index.filters import NAME

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
                _check_text(name, text)
            ours = np.asarray([column.code(text) for text in values.vocabulary], np.int32)
            lengths, codes = np.diff(values.offsets), ours[values.codes]
        else:
            lengths, flat = _flatten(name, values)
            for text in dict.fromkeys(flat):
                column.code(text)
            codes = np.fromiter(map(column.codes.__getitem__, flat), np.int32, len(flat))
        matrix = _distinct_rows(name, lengths, codes)
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

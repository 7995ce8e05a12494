"""What a filter means for the partitions of an attribute-partitioned index (index/partitioned.py).

Two questions: which partitions can hold a match at all (a filter that pins the partition attribute
rules out the others), and what the filter becomes in a partition that never held some attribute it
names. Such a partition has no column for it, and a comparison on an attribute an item lacks is false
(filters.py), so those comparisons are decided here instead of asking the partition about a column it
does not have: `price < 10` rules the partition out, `not (price > 5)` keeps all of it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.filters import AllOf, AnyOf, Compare, Expr, Filter, Member, Negation

PartitionKey = tuple[str, object] | None  # (kind, value); None: the default partition


def partition_key(value, attribute: str) -> PartitionKey:
    """The partition of one attribute value: strings, numbers and booleans by kind and value (3 and 3.0
    are one value, as filters compare them; True and 1 are not)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return ("bool", bool(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, int | float | np.integer | np.floating) and np.isfinite(value):
        return ("num", float(value))
    raise InvalidRequest(
        f"partition attribute {attribute!r}: each item needs one string, number or boolean value "
        f"(or none: the default partition), got {value!r}"
    )


def pinned_keys(expr: Expr | None, attribute: str) -> set | None:
    """The partitions outside which no item can satisfy `expr` (None: the expression does not pin
    the attribute, every partition may hold matches)."""
    if isinstance(expr, Compare):
        if expr.attribute == attribute and expr.op == "==":
            return {partition_key(expr.value, attribute)}
        return None
    if isinstance(expr, Member):
        if expr.attribute == attribute and not expr.negated:
            return {partition_key(value, attribute) for value in expr.values}
        return None
    if isinstance(expr, AllOf):
        pins = [p for p in (pinned_keys(part, attribute) for part in expr.parts) if p is not None]
        return set.intersection(*pins) if pins else None
    if isinstance(expr, AnyOf):
        pins = [pinned_keys(part, attribute) for part in expr.parts]
        return set.union(*pins) if all(p is not None for p in pins) else None
    return None  # a negation, or no expression


def decided(expr: Expr, known: set[str]) -> Expr | bool:
    """`expr` with its comparisons on attributes outside `known` decided (false: no item has them);
    True or False where that decides the whole expression."""
    if isinstance(expr, Compare | Member):
        return expr if expr.attribute in known else False
    if isinstance(expr, Negation):
        inner = decided(expr.part, known)
        return (not inner) if isinstance(inner, bool) else Negation(inner)
    parts = [decided(part, known) for part in expr.parts]
    settles = isinstance(expr, AnyOf)  # True settles an `or`, False an `and`
    if any(part is settles for part in parts):
        return settles
    open_parts = tuple(part for part in parts if not isinstance(part, bool))
    if not open_parts:
        return not settles
    if len(open_parts) == 1:
        return open_parts[0]
    return AnyOf(open_parts) if settles else AllOf(open_parts)


def filter_for_partition(flt: Filter | None, known: set[str]) -> Filter | None | bool:
    """The filter a partition holding the attributes `known` is asked (False: it cannot match)."""
    if flt is None or flt.where is None or flt.attributes <= known:
        return flt
    where = decided(flt.where, known)
    if where is False:
        return False
    if where is True:
        if flt.allow_ids is None and flt.deny_ids is None:
            return None
        return replace(flt, where=None, text=None)
    return replace(flt, where=where, text=None)

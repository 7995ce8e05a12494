"""The filter language over item attributes, and its compilation to masks and Milvus expressions.

A filter is a boolean expression written like a Python / Milvus expression:

    category == "shoes"
    brand in ["acme", "globex"]            brand not in ["acme"]
    price >= 10 and price < 50             10 <= price < 50
    in_stock == true                       not (category == "toys" or price > 100)

Names are item attributes; values are strings, numbers or true/false; `in` takes a list of literals.
Operators: ==, !=, <, <=, >, >=, in, not in, contains(attribute, value), and, or, not, parentheses. An
item that lacks an attribute never matches a comparison on it (so `not (price > 5)` matches items
without a price).

Multi-valued attributes (an item's genres or categories: a set of strings) are asked about any of their
values, as MongoDB, Elasticsearch and Milvus's array_contains do:

    contains(genre, "Comedy")       genre == "Comedy"     Comedy is among the item's genres
    genre in ["Comedy", "Drama"]                          at least one of its genres is in the list
    genre != "Comedy"               genre not in [...]    it has genres, and none is Comedy / in the list

A single value is a set of one, so every form means the same on one-valued attributes (`contains(brand,
"acme")` is `brand == "acme"`) and a filter need not know which kind an attribute is. An item with no
values has none of them, so it matches `not contains(genre, "Comedy")` but not `genre != "Comedy"`.

On top of the expression, a `Filter` carries id allow/deny lists. Per-query history masking is not a
filter (every query has its own list); it travels as `exclude=` on `Index.search`.

The expression is parsed with the standard library's `ast` (no parser of our own) and then checked
against a whitelist of node types, so nothing in it is ever evaluated as Python.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.attribute_values import NAME

if TYPE_CHECKING:
    from recindex.index.attributes import AttributeStore

MAX_FILTER_CHARS = 10_000
MAX_LIST_VALUES = 10_000
MAX_ID_LIST = 1_000_000
MAX_NODES = 2 * MAX_LIST_VALUES + 1_000  # syntax nodes; a long `in` list is one node per value
Value = Union[str, float, bool]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class Compare:
    attribute: str
    op: str  # one of == != < <= > >=
    value: Value


@dataclass(frozen=True)
class Member:
    attribute: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Negation:
    part: Expr


Expr = Union[Compare, Member, AllOf, AnyOf, Negation]  # noqa: UP007
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class Filter:
    """An attribute expression plus id allow/deny lists; any part may be absent."""

    where: Expr | None = None
    text: str | None = None
    allow_ids: np.ndarray | None = None
    deny_ids: np.ndarray | None = field(default=None)

    @property
    def attributes(self) -> set[str]:
        return _attributes(self.where) if self.where is not None else set()

    def to_dict(self) -> dict:
        out: dict = {}
        if self.text is not None:
            out["where"] = self.text
        if self.allow_ids is not None:
            out["allow_ids"] = self.allow_ids.tolist()
        if self.deny_ids is not None:
            out["deny_ids"] = self.deny_ids.tolist()
        return out


def make_filter(where: str | None = None, *, allow_ids=None, deny_ids=None) -> Filter:
    """Build a Filter from an expression string and optional id lists, checking all of them."""
    expr = parse_expression(where) if where else None
    return Filter(expr, where or None, _id_list(allow_ids, "allow_ids"), _id_list(deny_ids, "deny_ids"))


def as_filter(value: Filter | str | dict | None) -> Filter | None:
    """Accept a Filter, an expression string, or {"where", "allow_ids", "deny_ids"} (the service form)."""
    if value is None or isinstance(value, Filter):
        return value
    if isinstance(value, str):
        return make_filter(value)
    if isinstance(value, dict):
        unknown = set(value) - {"where", "allow_ids", "deny_ids"}
        if unknown:
            raise InvalidRequest(f"filter: unknown keys {sorted(unknown)}; use where, allow_ids, deny_ids")
        return make_filter(
            value.get("where"), allow_ids=value.get("allow_ids"), deny_ids=value.get("deny_ids")
        )
    raise InvalidRequest(f"filter must be an expression string or a dict, got {type(value).__name__}")


def _id_list(ids, what: str) -> np.ndarray | None:
    if ids is None:
        return None
    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InvalidRequest(f"{what} must be a flat list of integer item ids")
    if array.size > MAX_ID_LIST:
        raise InvalidRequest(f"{what} has {array.size:,} ids; at most {MAX_ID_LIST:,} are accepted")
    return np.unique(array.astype(np.int64))


def parse_expression(text: str) -> Expr:
    if not isinstance(text, str):
        raise InvalidRequest(f"a filter expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidRequest(f"filter is {len(text):,} characters long; at most {MAX_FILTER_CHARS:,}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise InvalidRequest(f"filter {text!r} is not a valid expression: {error}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise InvalidRequest(f"filter has more than {MAX_NODES} parts; simplify it or use allow_ids")
    return _convert(tree.body, text)


def _convert(node: ast.AST, text: str) -> Expr:
    if isinstance(node, ast.Call):
        return _contains(node, text)
    if isinstance(node, ast.BoolOp):
        parts = tuple(_convert(value, text) for value in node.values)
        return AllOf(parts) if isinstance(node.op, ast.And) else AnyOf(parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Negation(_convert(node.operand, text))
    if isinstance(node, ast.Compare):
        return _comparison(node, text)
    raise InvalidRequest(
        f"filter {text!r}: unexpected {_show(node, text)}; expected comparisons joined by and/or/not"
    )


def _contains(node: ast.Call, text: str) -> Expr:
    """`contains(attribute, value)`: the value is among the attribute's values (== with any-of)."""
    if not (isinstance(node.func, ast.Name) and node.func.id == "contains"):
        raise InvalidRequest(
            f"filter {text!r}: unexpected {_show(node, text)}; "
            "the only function is contains(attribute, value)"
        )
    if len(node.args) != 2 or node.keywords:
        raise InvalidRequest(f"filter {text!r}: {_show(node, text)} needs two arguments: (attribute, value)")
    return Compare(_name(node.args[0], text), "==", _literal(node.args[1], text))


def _comparison(node: ast.Compare, text: str) -> Expr:
    # A chain `10 <= price < 50` is the conjunction of its adjacent pairs, as in Python.
    operands = [node.left, *node.comparators]
    parts: list[Expr] = []
    for left, op, right in zip(operands, node.ops, operands[1:], strict=False):
        if isinstance(op, ast.In | ast.NotIn) and _is_name(right) and not _is_name(left):
            raise InvalidRequest(
                f"filter {text!r}: to ask whether {right.id} holds a value, write "
                f"contains({right.id}, {ast.get_source_segment(text.strip(), left)})"
            )
        if isinstance(op, ast.In | ast.NotIn):
            parts.append(Member(_name(left, text), _list(right, text), isinstance(op, ast.NotIn)))
            continue
        symbol = _OPS.get(type(op))
        if symbol is None:
            raise InvalidRequest(f"filter {text!r}: operator {_show(node, text)} is not supported")
        if _is_name(left):
            parts.append(Compare(_name(left, text), symbol, _literal(right, text)))
        elif _is_name(right):
            parts.append(Compare(_name(right, text), _FLIP[symbol], _literal(left, text)))
        else:
            raise InvalidRequest(f"filter {text!r}: {_show(node, text)} compares no attribute")
    for part in parts:
        if isinstance(part, Compare) and isinstance(part.value, str | bool) and part.op not in ("==", "!="):
            raise InvalidRequest(f"filter {text!r}: {part.op} needs a number, got {part.value!r}")
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _is_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id not in ("true", "false", "True", "False")


def _name(node: ast.AST, text: str) -> str:
    if not _is_name(node) or not NAME.match(node.id):
        raise InvalidRequest(f"filter {text!r}: expected an attribute name, found {_show(node, text)}")
    return node.id


def _literal(node: ast.AST, text: str) -> Value:
    if isinstance(node, ast.Name) and node.id in ("true", "false", "True", "False"):
        return node.id.lower() == "true"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, text)
        if isinstance(value, float):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        value = node.value
        if isinstance(value, bool | str):
            return value
        if not np.isfinite(value):
            raise InvalidRequest(f"filter {text!r}: {value} is not a finite number")
        return float(value)
    raise InvalidRequest(
        f"filter {text!r}: expected a string, number or true/false, found {_show(node, text)}"
    )


def _list(node: ast.AST, text: str) -> tuple[Value, ...]:
    if not isinstance(node, ast.List | ast.Tuple):
        raise InvalidRequest(f"filter {text!r}: `in` needs a [list] of values, found {_show(node, text)}")
    if len(node.elts) > MAX_LIST_VALUES:
        raise InvalidRequest(f"filter {text!r}: a list holds at most {MAX_LIST_VALUES:,} values")
    return tuple(_literal(element, text) for element in node.elts)


def _show(node: ast.AST, text: str) -> str:
    segment = ast.get_source_segment(text.strip(), node)
    return repr(segment) if segment else type(node).__name__


def _attributes(expr: Expr) -> set[str]:
    if isinstance(expr, Compare | Member):
        return {expr.attribute}
    if isinstance(expr, Negation):
        return _attributes(expr.part)
    return set().union(*(_attributes(part) for part in expr.parts))


# ---- evaluation over an attribute store ----------------------------------------------------------


def expression_mask(expr: Expr, store: AttributeStore, n: int) -> np.ndarray:
    """Boolean mask over the store's first n slots: which items satisfy the expression."""
    if isinstance(expr, AllOf):
        mask = np.ones(n, bool)
        for part in expr.parts:
            mask &= expression_mask(part, store, n)
        return mask
    if isinstance(expr, AnyOf):
        mask = np.zeros(n, bool)
        for part in expr.parts:
            mask |= expression_mask(part, store, n)
        return mask
    if isinstance(expr, Negation):
        return ~expression_mask(expr.part, store, n)
    if isinstance(expr, Member):
        mask = store.member(expr.attribute, expr.values, n)
        if expr.negated:
            mask = ~mask & store.present(expr.attribute, n)
        return mask
    return store.compare(expr.attribute, expr.op, expr.value, n)


# ---- compilation to a Milvus boolean expression ----------------------------------------------------


def milvus_expression(
    flt: Filter | None,
    id_field: str = "id",
    lists: Collection[str] = (),
    present: Callable[[str], str] | None = None,
) -> str:
    """The same filter as a Milvus boolean expression ("" when there is nothing to filter); `lists`
    names the multi-valued attributes (Milvus ARRAY fields); `present(attribute)` is the expression
    true where the item has a value (default `attribute is not null`; a server without nullable fields
    stores presence in a field of its own)."""
    if flt is None:
        return ""
    parts = []
    if flt.where is not None:
        parts.append(_milvus(flt.where, frozenset(lists), present or _not_null))
    if flt.allow_ids is not None:
        parts.append(f"{id_field} in {json.dumps(flt.allow_ids.tolist())}")
    if flt.deny_ids is not None and len(flt.deny_ids):
        parts.append(f"{id_field} not in {json.dumps(flt.deny_ids.tolist())}")
    return " and ".join(f"({part})" for part in parts)


def _milvus_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # double quotes, backslash escapes: what Milvus string literals take
    return repr(float(value))


def _not_null(attribute: str) -> str:
    return f"{attribute} is not null"


def _milvus(expr: Expr, lists: frozenset[str], present: Callable[[str], str]) -> str:
    # Milvus treats a missing (null) value as unknown, not false: `not (price > 10)` would drop items
    # without a price and `brand not in [...]` would keep them. The presence test makes each comparison
    # two-valued, which is what the mask evaluation above does.
    if isinstance(expr, Compare | Member) and expr.attribute in lists:
        return _milvus_list(expr, present)
    if isinstance(expr, Compare):
        return f"{present(expr.attribute)} and {expr.attribute} {expr.op} {_milvus_value(expr.value)}"
    if isinstance(expr, Member):
        values = ", ".join(_milvus_value(v) for v in expr.values)
        operator = "not in" if expr.negated else "in"
        return f"{present(expr.attribute)} and {expr.attribute} {operator} [{values}]"
    if isinstance(expr, Negation):
        return f"not ({_milvus(expr.part, lists, present)})"
    joiner = " and " if isinstance(expr, AllOf) else " or "
    return joiner.join(f"({_milvus(part, lists, present)})" for part in expr.parts)


def _milvus_list(expr: Compare | Member, present: Callable[[str], str]) -> str:
    """A comparison on an ARRAY field, with the any-of semantics above (== and != only: lists hold
    strings, and the parser refuses an ordering on a string)."""
    name = expr.attribute
    if isinstance(expr, Compare):
        test, negated = f"array_contains({name}, {_milvus_value(expr.value)})", expr.op == "!="
    else:
        values = ", ".join(_milvus_value(v) for v in expr.values)
        test, negated = f"array_contains_any({name}, [{values}])", expr.negated
    if negated:  # "has values, none of them ...": an empty or null list matches neither form
        # `!= 0`, not `> 0`: Milvus 2.3 servers compare array_length only with == and !=.
        return f"{present(name)} and array_length({name}) != 0 and not {test}"
    return f"{present(name)} and {test}"

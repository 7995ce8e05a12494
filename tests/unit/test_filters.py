"""The filter language: parsing, evaluation over attributes, and compilation to Milvus expressions."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.attributes import AttributeStore
from recindex.index.filters import (
    as_filter,
    expression_mask,
    make_filter,
    milvus_expression,
    parse_expression,
)


@pytest.fixture
def store():
    store = AttributeStore()
    store.set(
        np.arange(6),
        {
            "brand": ["acme", "globex", "acme", None, "initech", "globex"],
            "price": [5, 15, 25, 35, None, 55],
            "in_stock": [True, False, True, True, None, False],
        },
    )
    return store


def matches(text, store):
    return np.flatnonzero(expression_mask(parse_expression(text), store, 6)).tolist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('brand == "acme"', [0, 2]),
        ('brand != "acme"', [1, 4, 5]),  # a missing brand matches no comparison
        ('brand in ["globex", "initech"]', [1, 4, 5]),
        ('brand not in ["acme"]', [1, 4, 5]),
        ("price >= 15 and price < 50", [1, 2, 3]),
        ("10 <= price < 50", [1, 2, 3]),
        ("50 < price", [5]),
        ("price == 25 or in_stock == false", [1, 2, 5]),
        ("not (price > 20)", [0, 1, 4]),  # `not` of a comparison includes items lacking the attribute
        ('in_stock == true and (brand == "acme" or price > 30)', [0, 2, 3]),
        ("price > -1.5", [0, 1, 2, 3, 5]),
        ('brand == "nobody"', []),
    ],
)
def test_expressions_select_the_right_items(store, text, expected):
    assert matches(text, store) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("price >", "not a valid expression"),
        ("__import__('os').system('x')", "unexpected"),
        ("price + 1 > 3", "compares no attribute|expected an attribute"),
        ('brand < "m"', "needs a number"),
        ("brand in acme", "needs a \\[list\\]"),
        ("price == inf", "expected a string, number or true/false"),
        ("price", "unexpected"),
        ("a.b == 1", "compares no attribute"),
        ("x" * 20_000, "characters long"),
    ],
)
def test_bad_expressions_are_refused_with_a_reason(text, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_expression(text)


def test_type_mismatch_and_unknown_attribute_are_errors(store):
    with pytest.raises(InvalidRequest, match="holds strings"):
        matches("brand == 3", store)
    with pytest.raises(InvalidRequest, match="holds numbers"):
        matches('price == "3"', store)
    with pytest.raises(InvalidRequest, match="unknown attribute 'colour'.*brand, in_stock, price"):
        matches('colour == "red"', store)


def test_filter_forms_and_id_lists():
    assert as_filter(None) is None
    flt = as_filter({"where": "price < 3", "allow_ids": [3, 1, 1], "deny_ids": [2]})
    assert flt.allow_ids.tolist() == [1, 3] and flt.deny_ids.tolist() == [2]
    with pytest.raises(InvalidRequest, match="unknown keys"):
        as_filter({"wehre": "price < 3"})
    with pytest.raises(InvalidRequest, match="integer item ids"):
        make_filter(allow_ids=["a"])


def test_milvus_expression_is_equivalent_text():
    flt = make_filter('brand in ["a\\"b", "c"] or not (ok == true)', deny_ids=[4, 5])
    assert milvus_expression(flt) == (
        '((brand is not null and brand in ["a\\"b", "c"]) or (not (ok is not null and ok == true)))'
        " and (id not in [4, 5])"
    )
    assert milvus_expression(None) == ""


def test_attribute_values_are_checked():
    store = AttributeStore()
    with pytest.raises(InvalidRequest, match="mixes"):
        store.set(np.arange(2), {"x": ["a", 1]})
    with pytest.raises(InvalidRequest, match="one value per item"):
        store.set(np.arange(2), {"x": [1]})
    with pytest.raises(InvalidRequest, match="identifier"):
        store.set(np.arange(1), {"bad name": [1]})
    store.set(np.arange(2), {"x": [1, 2]})
    with pytest.raises(InvalidRequest, match="holds num values"):
        store.set(np.arange(2), {"x": ["a", "b"]})

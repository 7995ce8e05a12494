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


@pytest.fixture
def list_store():
    """A multi-valued `genre` beside a one-valued `brand`: any-of semantics on both."""
    store = AttributeStore()
    store.set(
        np.arange(6),
        {
            "genre": [["Comedy", "Drama"], ["Action"], None, ["Comedy"], [], "Drama"],
            "brand": ["acme", "globex", "acme", None, "initech", "globex"],
            "year": [1990, 1985, 2001, None, 1999, 1995],
        },
    )
    return store


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('contains(genre, "Comedy")', [0, 3]),
        ('genre == "Comedy"', [0, 3]),  # == on a list: among its values
        ('genre in ["Drama", "Action"]', [0, 1, 5]),  # any value in the list; a string is a set of one
        ('genre != "Comedy"', [1, 5]),  # has genres, none of them Comedy; items without genres never match
        ('genre not in ["Comedy", "Action"]', [5]),
        ('not contains(genre, "Comedy")', [1, 2, 4, 5]),  # `not` includes items without genres
        ('contains(genre, "Comedy") and contains(genre, "Drama")', [0]),
        ('contains(genre, "Comedy") and year >= 1990', [0]),
        ('contains(brand, "acme")', [0, 2]),  # a single value is a set of one
        ('contains(genre, "Horror")', []),
        ("contains(year, 1995)", [5]),
    ],
)
def test_multi_valued_attributes_match_any_of_their_values(list_store, text, expected):
    assert matches(text, list_store) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"Comedy" in genre', "write contains\\(genre, \"Comedy\"\\)"),
        ('contains(genre, "a", "b")', "needs two arguments"),
        ('contains("genre", "a")', "expected an attribute name"),
        ('startswith(genre, "a")', "the only function is contains"),
        ('genre < "m"', "needs a number"),
    ],
)
def test_bad_multi_valued_expressions_are_refused_with_a_reason(text, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_expression(text)


def test_multi_valued_attributes_are_checked_and_read_back(list_store):
    with pytest.raises(InvalidRequest, match="holds strings"):
        matches("contains(genre, 3)", list_store)
    with pytest.raises(InvalidRequest, match="strings only"):
        list_store.set(np.array([9]), {"genre": [["a", 1]]})
    with pytest.raises(InvalidRequest, match="holds str values, got str_list"):
        list_store.set(np.array([9]), {"brand": [["a", "b"]]})
    expected = [["Comedy", "Drama"], ["Action"], None, ["Comedy"], None, ["Drama"]]
    assert list_store.rows(np.arange(6))["genre"] == expected
    list_store.set(np.array([2]), {"genre": [["Horror", "Comedy", "Horror", "Drama", "Action"]]})  # widens
    assert matches('contains(genre, "Horror")', list_store) == [2]
    assert list_store.rows(np.array([2]))["genre"] == [["Horror", "Comedy", "Drama", "Action"]]
    assert matches('genre == "Comedy"', list_store) == [0, 2, 3]


def test_multi_valued_attributes_compile_to_milvus_array_functions():
    flt = make_filter('contains(genre, "A") or genre not in ["B", "C"] or brand == "x"')
    assert milvus_expression(flt, lists={"genre"}) == (
        '((genre is not null and array_contains(genre, "A")) or '
        '(genre is not null and array_length(genre) != 0 and not array_contains_any(genre, ["B", "C"])) or '
        '(brand is not null and brand == "x"))'
    )


def test_multi_valued_attributes_survive_save_and_load(list_store, tmp_path):
    list_store.save(tmp_path, 6)
    loaded = AttributeStore.load(tmp_path)
    assert loaded.schema["genre"] == "str_list"
    assert matches('genre in ["Drama", "Action"]', loaded) == [0, 1, 5]
    assert loaded.rows(np.arange(6)) == list_store.rows(np.arange(6))


def test_compact_value_lists_read_and_index_like_plain_lists():
    from recindex.index.attribute_values import ValueLists
    from recindex.index.factory import make_index

    plain = [["a", "b"], None, ["c", "a"], ["b"]]
    compact = ValueLists([0, 2, 2, 4, 5], [0, 1, 2, 0, 1], ["a", "b", "c"])
    assert list(compact) == plain and compact[-1] == ["b"]
    assert list(compact.take(np.array([3, 0]))) == [["b"], ["a", "b"]]
    vectors = np.eye(4, dtype=np.float32)
    for spec in ("exact", "sharded:2:exact"):
        found = []
        for tags in (plain, compact):
            index = make_index(spec, 4)
            index.add(np.arange(4), vectors, attributes={"tag": tags})
            index.add([1], vectors[1:2], attributes={"tag": ["b"]})  # a string joins a list column
            result = index.search(np.ones((1, 4), np.float32), 4, filter='contains(tag, "b")')
            found.append(result.ids.tolist())
        assert found[0] == found[1] and sorted(found[0][0][:3]) == [0, 1, 3]

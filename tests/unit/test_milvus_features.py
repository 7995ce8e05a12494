"""What a Milvus server supports, read from its version and from an existing collection's fields."""

import pytest

from recindex.index.milvus.features import Layout, layout_of_fields, server_has_nullable


@pytest.mark.parametrize(
    ("version", "nullable"),
    [
        ("milvus_lite-3.2.2", True),  # Milvus Lite, file or server
        ("v2.3.5-lite", False),  # the `milvus` pip package's standalone server
        ("v2.4.15", False),
        ("v2.5.0", True),
        ("2.6.1", True),
        ("v3.0.0-beta", True),
        ("unknown", False),  # presence fields work on every server
        ("", False),
    ],
)
def test_nullable_fields_from_the_server_version(version, nullable):
    assert server_has_nullable(version) is nullable


def test_an_existing_collection_keeps_its_layout():
    attributes = {"price": "num", "tags": "str_list"}
    base = [{"name": "id"}, {"name": "vector"}]
    nullable = [*base, {"name": "price", "nullable": True}, {"name": "tags", "nullable": True}]
    presence = [*base, {"name": "price"}, {"name": "price__present"}, {"name": "tags"}]
    lists_only = [*base, {"name": "tags"}]  # a presence layout without scalar attributes
    assert layout_of_fields(nullable, attributes) == Layout(nullable=True)
    assert layout_of_fields(presence, attributes) == Layout(nullable=False)
    assert layout_of_fields(lists_only, {"tags": "str_list"}) == Layout(nullable=False)
    assert layout_of_fields(base, {}) is None


def test_presence_tests():
    assert Layout(nullable=True).present("price", False) == "price is not null"
    assert Layout(nullable=False).present("price", False) == "price__present == true"
    assert Layout(nullable=False).present("tags", True) == "array_length(tags) != 0"

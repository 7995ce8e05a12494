"""A Milvus collection partitioned by an item attribute: the attribute's field is the collection's
partition key (`is_partition_key=True`), so Milvus hashes each item into one of the collection's
partitions by its value, and a search whose filter pins the attribute (`region == "eu"`,
`region in [...]`) is pruned to the partitions of those values by the server.

    make_index("milvus:HNSW", 64, options={"uri": ..., "partition_key": "region"})

Milvus allows one partition key per collection, of a VARCHAR (or INT64) field that is never null, fixed
when the collection is created. So the partition attribute holds strings, every item needs a value
(there is no default partition: an item without one is refused, name a value such as "none" for
them), and the first add that creates the collection must carry it.

Servers: partition keys came in Milvus 2.2.9, but the 2.3.5 standalone server (`pip install
milvus==2.3.5`, the test fixture's) answers filters on the key wrongly: after 400 upserts of 4 values,
flushed, `count(*)` under `region == "eu"` is 1 instead of 100 at Strong consistency, and a search with
that filter returns 1 row instead of 10. So a partition key is refused, with that reason and before
anything is created, on servers older than 2.4 (newer servers are not measured here); Milvus Lite
answers them correctly and is accepted.
"""

from __future__ import annotations

import re

from recindex.errors import InvalidRequest
from recindex.index.attribute_values import NAME

PARTITION_KEY_SINCE = (2, 4, 0)  # the first release trusted with them (2.3.5 filters them wrongly)


def check_partition_key_name(name: str) -> None:
    if name and not NAME.match(name):
        raise InvalidRequest(f"partition_key names an attribute (an identifier), got {name!r}")


def server_has_partition_key(version: str) -> bool:
    """Whether a server reporting `version` has partition keys (Lite: 'milvus_lite-3.2.2'; servers:
    'v2.3.5-lite', 'v2.5.4', ...); False where the version cannot be read."""
    if version.startswith("milvus_lite"):
        return True
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    return bool(found) and tuple(int(part) for part in found.groups()) >= PARTITION_KEY_SINCE


def check_server(name: str, version: str, uri: str) -> None:
    """Refuse a partition key on a server without them, naming the server and what it lacks."""
    if name and not server_has_partition_key(version):
        raise InvalidRequest(
            f"the Milvus at {uri} reports version {version!r}; partition keys (partition_key={name!r}) "
            "need Milvus 2.4 or newer, or Milvus Lite (the 2.3 server answers filters on a partition key "
            "wrongly). Leave partition_key unset there."
        )


def check_partition_values(name: str, columns: dict[str, tuple[str, list]], n: int) -> None:
    """Every item of an add carries a string value of the partition attribute."""
    if not name:
        return
    if name not in columns:
        raise InvalidRequest(
            f"this Milvus collection is partitioned by {name!r}: every add must give each item a "
            f"{name} value (attributes={{{name!r}: [...]}}), {n} items came without one"
        )
    kind, values = columns[name]
    if kind != "str":
        raise InvalidRequest(f"partition attribute {name!r} holds strings in Milvus, got {kind} values")
    missing = sum(value is None for value in values)
    if missing:
        raise InvalidRequest(
            f"partition attribute {name!r}: {missing} of {n} items have no value; a Milvus partition "
            'key is never null, so give them one (e.g. "none")'
        )


def field_options(name: str, partition_key: str) -> dict:
    """The extra options of an attribute's field: the partition key's flag, where it is the one."""
    return {"is_partition_key": True} if name == partition_key and partition_key else {}

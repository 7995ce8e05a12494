"""What the Milvus at a uri supports, and how reads are made consistent with writes.

Missing attribute values: Milvus 2.5 and later, and Milvus Lite, have nullable scalar fields and
`is null` / `is not null` in expressions. Older servers (the 2.3 standalone server of the `milvus` pip
package, for instance) accept `nullable=True` when a collection is created but ignore it, refuse `None`
on insert and cannot parse `is not null`. There the backend stores presence explicitly: one BOOL field
`<attribute>__present` per scalar attribute (the attribute's own field holds a placeholder when it is
false), and an empty ARRAY for a multi-valued attribute without values. Filters test that field where
they would test `is not null`, so the same filter gives the same answer on every server.

A new collection uses nullable fields where the server has them (Milvus Lite, or a server reporting
version 2.5 or newer) and presence fields otherwise, including on a version string it cannot read. An
existing collection keeps the layout it was created with, read from its fields: a server upgrade does
not change how its rows are stored.

Consistency (why each operation uses the level it does):
- Reads (search, query, count) use Session: pymilvus remembers the timestamp of this process's last
  write to the collection and the server answers once it has applied that write, so a write is visible
  to this process's next read without paying Strong's wait for the next time tick (about 200 ms per read
  on the 2.3 server, see docs/indexes.md). Another process (another replica) has no such timestamp for
  the collection and reads as Eventually: it sees a write once its query node has consumed it, normally
  within one time tick.
- The first read after an index is opened from a saved folder is Strong, once: the process has no write
  timestamp of its own yet, and a loaded index must see everything written before it was loaded.
- The first read after a delete is Strong, once: the 2.3 server answers a delete without a timestamp,
  so pymilvus's Session timestamp stays at the last upsert and a Session read could still find the
  deleted item. The Strong read waits until the query node has applied the delete; later Session reads
  on that node see it too. (On a cluster with several query node replicas, another replica may apply
  it a time tick later.)
- Writes need no level; their timestamps feed the Session reads above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRESENT_SUFFIX = "__present"  # the BOOL field that says whether an attribute has a value
NULLABLE_SINCE = (2, 5)  # the first Milvus server release with nullable scalar fields
READ = "Session"
CATCH_UP = "Strong"  # the one read after a load or a delete


@dataclass(frozen=True)
class Layout:
    """How a collection stores missing attribute values: nullable fields, or presence fields."""

    nullable: bool

    def present(self, attribute: str, multi_valued: bool) -> str:
        """A Milvus expression true where the item has a value for `attribute`."""
        if self.nullable:
            return f"{attribute} is not null"
        if multi_valued:  # `!= 0`: Milvus 2.3 compares array_length only with == and !=
            return f"array_length({attribute}) != 0"
        return f"{attribute}{PRESENT_SUFFIX} == true"


def server_has_nullable(version: str) -> bool:
    """Whether a server reporting `version` has nullable scalar fields (Lite: 'milvus_lite-3.2.2';
    servers: 'v2.3.5-lite', 'v2.5.4', ...); False where the version cannot be read."""
    if version.startswith("milvus_lite"):
        return True
    found = re.search(r"(\d+)\.(\d+)", version)
    return bool(found) and (int(found.group(1)), int(found.group(2))) >= NULLABLE_SINCE


def layout_of_fields(fields: list[dict], attributes: dict[str, str]) -> Layout | None:
    """The layout an existing collection was created with, from describe_collection's fields; None
    where it has no attribute fields to tell by (then nothing depends on it until new ones exist)."""
    names = {field["name"]: field for field in fields}
    if any(name + PRESENT_SUFFIX in names for name in attributes):
        return Layout(nullable=False)
    # A partition key field is never nullable, whatever the layout: it does not tell.
    known = [names[name] for name in attributes if name in names and not names[name].get("is_partition_key")]
    if not known:
        return None
    return Layout(nullable=any(field.get("nullable") for field in known))

"""Fleet item ids and names without a server: a new item's id is the same in every replica and never
a catalogue index, and a replica names an id it has not seen through the fleet's item table, once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recindex.index.milvus.item_table import NEW_ITEM_BASE, ItemRecord, fleet_item_id
from recindex.pipelines import load_bundle
from recindex.serve.fleet_items import fleet_ids, register
from recindex.serve.registry import load_version

DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"


def test_new_item_ids_are_hashes_above_every_catalogue_index():
    ids = [fleet_item_id(f"sku-{n}") for n in range(1000)]
    assert len(set(ids)) == 1000
    assert min(ids) >= NEW_ITEM_BASE and max(ids) < 2**63
    assert fleet_item_id("sku-1") == fleet_item_id("sku-1")  # no state: every replica agrees


def test_records_round_trip_through_table_rows():
    record = ItemRecord("sku-9", ["brand=acme"], None, {"price": 9.5}, False, 1234, 0.0)
    assert ItemRecord.of(record.row()) == record
    assert record.row()["item_id"] == fleet_item_id("sku-9")


def test_an_unseen_id_is_named_through_the_resolver_once(tiny_bundle):
    version = load_version(load_bundle(tiny_bundle(DATASET)).path, None)
    asked = []

    def resolve(ids):
        asked.append(list(ids))
        return {i: f"elsewhere-{i}" for i in ids}

    version = replace(version, resolve_names=resolve)
    mine = register(version, ["added-here"])
    other = fleet_item_id("added-elsewhere")
    catalogue = version.item_lookup[str(version.bundle.data.item_ids[0])]
    names = version.raw_item_ids(np.asarray([catalogue, int(mine[0]), other]))
    assert names[1] == "added-here" and names[2] == f"elsewhere-{other}"
    assert asked == [[other]]
    version.raw_item_ids(np.asarray([other]))
    assert asked == [[other]]  # remembered
    assert fleet_ids(version, ["added-elsewhere"]).tolist() == [other]  # deletes need no name

"""What only URI does behind the service (what every family does: test_family_serving.py): a new item is
coded by the decoder on arrival, and similar items include every item of the trigger item's leaf."""

import numpy as np

KEY = {"X-API-Key": "test-key"}


def test_a_new_item_is_coded_by_the_decoder_on_arrival(family_bundle, serve):
    served = serve(family_bundle("uri"), "uri")
    data = served.version.bundle.data
    tokens = [data.item_features.names[t] for t in data.item_features.of(3)]
    put = served.http.put(
        "/v1/items", json={"items": [{"item_id": "fresh", "features": tokens}]}, headers=KEY
    )
    assert put.status_code == 200, put.text
    ids, codes = served.index.codes_of_items()
    assert (codes[ids == served.version.internal_id("fresh")] >= 0).all()
    assert (ids == served.version.internal_id("fresh")).sum() == 1


def test_similar_items_include_the_trigger_items_leaf(family_bundle, serve):
    served = serve(family_bundle("uri"), "uri", beam=1)
    bundle, trigger = served.version.bundle, 7
    codes = bundle.model.item_codes.numpy()
    same_leaf = np.flatnonzero((codes == codes[trigger]).all(1))
    answer = served.http.post(
        "/v1/similar-items", json={"item_ids": [str(bundle.data.item_ids[trigger])], "k": 100}
    )
    assert answer.status_code == 200, answer.text
    found = {served.version.item_lookup[item["item_id"]] for item in answer.json()["items"]}
    assert trigger not in found
    assert set(same_leaf.tolist()) - {trigger} <= found

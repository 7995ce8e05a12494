import numpy as np

from recindex.data.storage import load_interactions, save_interactions


def test_round_trip_keeps_fingerprint(tiny_synthetic, tmp_path):
    save_interactions(tiny_synthetic, tmp_path / "d")
    loaded = load_interactions(tmp_path / "d")
    assert loaded.fingerprint() == tiny_synthetic.fingerprint()
    assert np.array_equal(loaded.items, tiny_synthetic.items)
    assert loaded.item_features.names == tiny_synthetic.item_features.names

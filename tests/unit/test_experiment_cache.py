"""The cache keys of experiment cells: what enters them and what does not."""

from __future__ import annotations

import dataclasses

from recindex.config import load_config
from recindex.experiments.cache import NOT_IN_RESULTS, PACKAGE, bundle_key, evaluation_key


def test_a_bundle_key_changes_with_what_is_learned_and_nothing_else():
    config = load_config(None, ["train.epochs=3"])
    key = bundle_key(config, "data-a", None, None)
    threads = dataclasses.replace(config, train=dataclasses.replace(config.train, threads=7))
    moved = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir="/elsewhere"))
    assert bundle_key(threads, "data-a", None, None) == key
    assert bundle_key(moved, "data-a", None, None) == key
    assert bundle_key(load_config(None, ["train.epochs=4"]), "data-a", None, None) != key
    assert bundle_key(config, "data-b", None, None) != key


def test_a_warm_started_bundle_is_keyed_by_the_bundle_it_starts_from_not_its_path():
    one = load_config(None, ['model.kind="mfli"', 'mfli.init_from="/runs/a"'])
    two = load_config(None, ['model.kind="mfli"', 'mfli.init_from="/runs/b"'])
    assert bundle_key(one, "d", "mfli.init_from", "k1") == bundle_key(two, "d", "mfli.init_from", "k1")
    assert bundle_key(one, "d", "mfli.init_from", "k1") != bundle_key(one, "d", "mfli.init_from", "k2")


def test_evaluation_keys_follow_the_bundle_and_the_cut_offs():
    assert evaluation_key("b", (), (10,)) != evaluation_key("b", (), (10, 20))
    assert evaluation_key("b", (), (10,)) != evaluation_key("c", (), (10,))


def test_the_sources_left_out_of_the_code_version_exist():
    for entry in NOT_IN_RESULTS:
        assert (PACKAGE / entry).exists(), entry

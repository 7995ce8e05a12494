"""Bundles written before the family table (`[mfli] enabled`, `[uri] enabled`, a URI bundle's path in
`uri.index`, URI's model class under `recindex.generative`) still load, as the family they meant."""

import json
from pathlib import Path

import pytest

from recindex.config import from_dict
from recindex.errors import BundleError, RecIndexError
from recindex.pipelines import FAMILIES, load_bundle
from recindex.pipelines.families import family_of_manifest


def test_a_bundle_with_the_old_config_form_loads(tiny_bundle, tmp_path):
    path = tiny_bundle("synthetic:n_users=120,n_items=50,seed=5")
    old = tmp_path / "old"
    old.mkdir()
    for file in Path(path).rglob("*"):
        target = old / file.relative_to(path)
        if file.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(file.read_bytes())
    manifest = json.loads((old / "manifest.json").read_text())
    config = manifest["config"]
    del config["model"]["kind"]
    config["mfli"]["enabled"] = False
    config["uri"]["enabled"] = False
    (old / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(old)
    assert bundle.config.model.kind == "two_tower"
    assert bundle.bundle_id == manifest["bundle_id"]


def test_old_family_switches_read_as_the_kind_they_meant():
    assert from_dict({"mfli": {"enabled": True}}).model.kind == "mfli"
    assert from_dict({"uri": {"enabled": True}}).model.kind == "uri"
    assert from_dict({"sci": {"symmetric_weight": 0.1}}).model.kind == "sci"
    old_path = from_dict({"uri": {"enabled": True, "index": "runs/uri/beauty"}}).uri
    assert (old_path.index, old_path.index_bundle) == ("bundle", "runs/uri/beauty")
    # and the same older forms given with --set
    from recindex.config import load_config

    old_set = load_config(None, ["uri.enabled=true", 'uri.index="runs/uri/beauty"'])
    assert (old_set.model.kind, old_set.uri.index, old_set.uri.index_bundle) == (
        "uri",
        "bundle",
        "runs/uri/beauty",
    )
    with pytest.raises(RecIndexError, match="contradicts"):
        from_dict({"model": {"kind": "uri"}, "mfli": {"enabled": True}})


def test_choices_are_refused_at_load_with_the_allowed_values():
    with pytest.raises(RecIndexError, match="'two_tower', 'mfli', 'uri', 'sci'"):
        from_dict({"model": {"kind": "sasrec"}})
    with pytest.raises(RecIndexError, match="'learn'"):
        from_dict({"uri": {"index": 3}})


def test_every_model_class_is_read_by_one_family():
    old_uri = {"model_class": "recindex.uri.model.URIModel"}
    assert family_of_manifest(old_uri, Path("b")) is FAMILIES["uri"]
    with pytest.raises(BundleError, match="unknown model class"):
        family_of_manifest({"model_class": "some.Model"}, Path("b"))


def test_uri_index_sources_are_the_quantization_methods():
    from typing import get_args

    from recindex.config import URIIndexSource
    from recindex.quant.semantic_ids import METHODS

    assert set(get_args(URIIndexSource)) == {"learn", "sci", "bundle", *METHODS}

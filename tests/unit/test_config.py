import pytest

from recindex.config import load_config
from recindex.errors import RecIndexError


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\ndim = 32\n[train]\nlr = 0.01\nnegatives = "full"\n')
    config = load_config(path, ["train.lr=0.5", "eval.ks=[1, 3]", "data.dataset=ml-100k"])
    assert config.model.dim == 32
    assert config.train.lr == 0.5 and config.train.negatives == "full"
    assert config.eval.ks == (1, 3)
    assert config.data.dataset == "ml-100k"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.nope=1", "unknown key"),
        ("nope.x=1", "unknown section"),
        ("model.dim=abc", "expected int"),
        ("lr=1", "section.key"),
        ("train.lr", "section.key=value"),
    ],
)
def test_bad_settings_are_named(override, message):
    with pytest.raises(RecIndexError, match=message):
        load_config(None, [override])


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\n")
    with pytest.raises(RecIndexError, match="bad.toml: invalid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian.epochs=3", "--set 'trian.epochs=3': unknown section 'trian' (did you mean 'train'?); valid"),
        ("train.epoch=3", "--set 'train.epoch=3': unknown key 'epoch' in [train] (did you mean 'epochs'?)"),
        ("train.epochs=many", "--set 'train.epochs=many': expected int, got 'many'"),
    ],
)
def test_a_typo_in_set_is_reported_as_the_overrides_not_the_files(tmp_path, override, message):
    path = tmp_path / "recipe.toml"
    path.write_text("[train]\nepochs = 5\n")
    with pytest.raises(RecIndexError) as caught:
        load_config(path, [override])
    assert str(caught.value).startswith(message)
    assert "recipe.toml" not in str(caught.value)

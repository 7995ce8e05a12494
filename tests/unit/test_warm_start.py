"""A warm start (`mfli.init_from`, `uri.init_from`) that cannot be used says which setting to change."""

import re

import pytest

from recindex.config import load_config
from recindex.errors import RecIndexError
from recindex.pipelines.experiment import run_experiment

DATASET = "synthetic:n_users=60,n_items=30,n_attributes=8,seed=4"


def _run(section: str, init_from: str) -> None:
    overrides = [
        f'data.dataset="{DATASET}"',
        "model.dim=8",
        "model.max_len=5",
        "train.epochs=1",
        "train.threads=1",
        f"{section}.enabled=true",
        f'{section}.init_from="{init_from}"',
    ]
    run_experiment(load_config(None, overrides), None, progress=False)


@pytest.mark.parametrize("section", ["mfli", "uri"])
def test_a_missing_init_from_names_the_setting_and_the_fix(section, tmp_path):
    missing = tmp_path / "runs" / "bench" / "beauty"
    expected = (
        f"{section}.init_from: {missing} does not exist; train the two-tower bundle first "
        f"or pass --set {section}.init_from=PATH"
    )
    with pytest.raises(RecIndexError, match=re.escape(expected)):
        _run(section, str(missing))


@pytest.mark.parametrize("section", ["mfli", "uri"])
def test_a_folder_that_is_no_bundle_is_named_as_such(section, tmp_path):
    with pytest.raises(RecIndexError, match=rf"{section}\.init_from: .* is not a bundle .*--set {section}"):
        _run(section, str(tmp_path))

"""The pinned figures (tests/regression/pinned.py) are reproduced by the code as it is now, computed with
the same arithmetic on any x86-64 machine (`pinned.REPRODUCIBLE`)."""

import json

import pytest
from tests.conftest import SHARED_DATA, require_shared
from tests.regression.pinned import DATASETS, PINNED, compute_reproducibly, differences


@pytest.mark.parametrize("name", list(DATASETS))
def test_the_pinned_figures_are_reproduced(name):
    if name == "ml-100k":
        require_shared("ml-100k")
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))[name]
    moved = differences(pinned, compute_reproducibly(name, str(SHARED_DATA)))
    assert not moved, "figures moved:\n" + "\n".join(moved)

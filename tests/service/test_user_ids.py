"""A user id in a request: a JSON number or a string, naming the same user as the dataset's id map does
(integer ids when every id in the data is an integer, else strings); anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.data.interactions import Interactions
from recindex.errors import RecIndexError
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
from recindex.pipelines.recommend import find_user
from recindex.serve.app import create_app
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings

DATASET = "synthetic:n_users=120,n_items=50,seed=5"


@pytest.fixture(scope="module")
def served(tiny_bundle):
    bundle = load_bundle(tiny_bundle(DATASET))
    index = make_index("exact", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    version = ServingVersion.of(bundle, index)
    return TestClient(create_app(ServiceSettings(), Recommender(version))), version


def items(http, user) -> tuple[list[str], str | None]:
    response = http.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    return [i["item_id"] for i in body["items"]], body["fallback"]


def test_a_number_and_its_string_are_the_same_user(served):
    http, version = served
    user = int(version.bundle.data.user_ids[7])
    by_number, fallback = items(http, user)
    assert fallback is None and by_number == items(http, str(user))[0]
    assert items(http, 10**6) == items(http, "1000000") and items(http, 10**6)[1] == "unknown user"


@pytest.mark.parametrize("user", [True, 7.0, 2**63, -(2**63) - 1, [7], {"id": 7}, "", "x" * 257])
def test_other_user_ids_are_refused(served, user):
    http, _ = served
    response = http.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert response.status_code == 422, response.text


def test_ids_map_as_the_dataset_maps_them():
    numbers = Interactions.from_sequences([5, -3, 42], ["a", "b"], [[0], [1], [0, 1]])
    assert numbers.user_ids.dtype.kind == "i"
    assert find_user(numbers, "42") == find_user(numbers, str(42)) == 2
    assert find_user(numbers, "-3") == 1  # integer ids can be negative
    with pytest.raises(RecIndexError):
        find_user(numbers, "²")  # a digit, but not a decimal number: an unknown user, not a crash
    strings = Interactions.from_sequences(np.asarray(["u1", "42"], dtype=object), ["a"], [[0], [0]])
    assert find_user(strings, str(42)) == 1 and find_user(strings, "u1") == 0

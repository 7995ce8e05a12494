"""Requests are answered by one bundle version, with a flagged popularity fallback."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
from recindex.serve.recommender import Recommender, ServingVersion

DATASET = "synthetic:n_users=150,n_items=60,seed=4"


@pytest.fixture(scope="module")
def version(tiny_bundle):
    out = tiny_bundle(DATASET)
    bundle = load_bundle(out)
    index = make_index("exact", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    return ServingVersion.of(bundle, index)


def test_known_user_gets_items_outside_their_history(version):
    recommender = Recommender(version)
    user = str(version.bundle.data.user_ids[3])
    answer = recommender.recommend(user_id=user, k=10)
    history = version.bundle.data.sequence(3)
    assert len(answer.ids) == 10 and not np.isin(answer.ids, history).any()
    assert answer.bundle_id == version.bundle_id and answer.fallback is None
    assert (np.diff(answer.scores) <= 1e-6).all()


def test_unknown_user_gets_the_popular_items_flagged(version):
    answer = Recommender(version).recommend(user_id="nobody-here", k=5)
    counts = version.bundle.data.item_counts()
    assert answer.fallback == "unknown user"
    assert np.array_equal(np.sort(counts[answer.ids])[::-1], counts[answer.ids])
    assert counts[answer.ids].min() >= np.sort(counts)[-5]


def test_recent_items_and_vector_queries(version):
    recommender = Recommender(version)
    raw = [str(x) for x in version.bundle.data.item_ids[:3]]
    by_items = recommender.recommend(recent_items=raw, k=5)
    assert not np.isin(by_items.ids, [0, 1, 2]).any() and by_items.fallback is None
    by_vector = recommender.recommend(vector=version.bundle.item_embeddings[7].tolist(), k=1)
    assert by_vector.ids[0] == 7
    with pytest.raises(InvalidRequest, match="unknown items"):
        recommender.recommend(recent_items=["no-such-item"], k=5)
    with pytest.raises(InvalidRequest, match="dimension"):
        recommender.recommend(vector=[0.1, 0.2], k=5)
    with pytest.raises(InvalidRequest, match="exactly one"):
        recommender.recommend(user_id="1", vector=[0.1], k=5)


class FailingIndex:
    def search(self, *args, **kwargs):
        raise RuntimeError("shard unreachable")


def test_index_failure_falls_back_to_popular_items_that_pass_the_filter(version):
    broken = ServingVersion(version.bundle, FailingIndex(), version.popular, version.item_lookup)
    answer = Recommender(broken).recommend(vector=[0.0] * 16, k=5, filter={"allow_ids": [4, 9, 11]})
    assert answer.fallback == "index error"
    assert set(answer.ids) == {4, 9, 11}

"""Batching concurrent recommend requests: each answer is the one the request gets alone, one version
answers a whole batch, and the queue and the wait are bounded."""

import asyncio
import itertools

import httpx
import numpy as np
import pytest

from recindex.errors import InvalidRequest, RecIndexError
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
from recindex.serve.app import create_app
from recindex.serve.batching import Overloaded, RequestBatcher
from recindex.serve.recommender import Recommender, RecommendQuery, ServingVersion
from recindex.serve.settings import ServiceSettings, load_settings

DATASET = "synthetic:n_users=200,n_items=400,seed=21"
OTHER = "synthetic:n_users=200,n_items=400,seed=22"


def serving(bundle, backend: str = "faiss:HNSW16") -> ServingVersion:
    index = make_index(backend, bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    return ServingVersion.of(bundle, index)


@pytest.fixture(scope="module")
def bundles(tiny_bundle):
    return load_bundle(tiny_bundle(DATASET)), load_bundle(tiny_bundle(OTHER))


def mixed_queries(version: ServingVersion) -> list[RecommendQuery]:
    """Users with histories of many lengths, several k, filters, recent items, vectors, an unknown user,
    and requests that fail on their own."""
    data = version.bundle.data
    users = [str(u) for u in data.user_ids[:24]]
    items = [str(i) for i in data.item_ids[:40]]
    queries = [RecommendQuery(user_id=u, k=k) for u in users for k in (10, 50)]
    queries += [
        RecommendQuery(user_id=users[0], k=10, exclude_seen=False),
        RecommendQuery(user_id=users[1], k=10, filter={"allow_ids": list(range(0, 400, 3))}),
        RecommendQuery(user_id=users[2], k=10, filter={"deny_ids": [1, 2, 3]}),
        RecommendQuery(user_id=users[3], k=10, filter={"allow_ids": [7]}),  # the history may hold it
        RecommendQuery(user_id="nobody", k=5),
        RecommendQuery(recent_items=items[:3], k=20),
        RecommendQuery(recent_items=items[5:12], k=20),
        RecommendQuery(recent_items=["no-such-item"], k=5),  # its own error
        RecommendQuery(vector=version.bundle.item_embeddings[9].tolist(), k=8),
        RecommendQuery(vector=[0.1, 0.2], k=8),  # wrong dimension: its own error
        RecommendQuery(user_id=users[4], k=10, filter={"where": "price >"}),  # bad filter: its own error
        RecommendQuery(user_id=users[5], vector=[0.1], k=10),  # two queries in one: its own error
    ]
    return queries


def same(a, b) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return (
        np.array_equal(a.ids, b.ids)
        and np.array_equal(a.scores, b.scores)
        and a.fallback == b.fallback
        and a.bundle_id == b.bundle_id
    )


@pytest.mark.parametrize("backend", ["faiss:HNSW16", "exact"])
def test_batched_answers_are_the_answers_alone(bundles, backend):
    alone_version, batch_version = serving(bundles[0], backend), serving(bundles[0], backend)  # own caches
    queries = mixed_queries(alone_version)
    alone = [Recommender(alone_version).answer_with(alone_version, [q])[0] for q in queries]
    together = Recommender(batch_version).answer_with(batch_version, queries)
    assert len(together) == len(queries)
    for query, a, b in zip(queries, alone, together, strict=True):
        assert same(a, b), query
    errors = [a for a in together if isinstance(a, Exception)]
    assert len(errors) == 4 and all(isinstance(e, InvalidRequest) for e in errors)
    assert sum(a.fallback == "unknown user" for a in together if not isinstance(a, Exception)) == 1


class Searches:
    """Counts an index's searches (calls and queries), patched onto the index object; can fail for
    one query vector, or run a hook on each search."""

    def __init__(self, index, fail_on: np.ndarray | None = None, on_search=None):
        self.search, self.fail_on, self.on_search = index.search, fail_on, on_search
        self.calls, self.rows = 0, 0
        index.search = self

    def __call__(self, queries, k, **kwargs):
        self.calls += 1
        self.rows += len(queries)
        if self.on_search is not None:
            self.on_search()
        if self.fail_on is not None and any(np.array_equal(q, self.fail_on) for q in queries):
            raise RuntimeError("a shard is unreachable for this query")
        return self.search(queries, k, **kwargs)


def test_queries_that_can_share_a_search_share_one(bundles):
    version = serving(bundles[0])
    searches = Searches(version.index)
    history = version.bundle.data.sequence
    users = [u for u in range(version.bundle.data.n_users) if len(history(u)) == len(history(0))][:6]
    queries = [RecommendQuery(user_id=str(version.bundle.data.user_ids[u]), k=10) for u in users]
    assert len(queries) >= 2
    Recommender(version).answer_with(version, queries)
    assert (searches.calls, searches.rows) == (1, len(queries))  # HNSW: one search for all six
    exact = serving(bundles[0], "exact")
    searches = Searches(exact.index)
    Recommender(exact).answer_with(exact, queries)
    assert (searches.calls, searches.rows) == (len(queries), len(queries))  # a scan: one by one


def test_an_index_failure_for_one_query_falls_back_for_that_query_only(bundles):
    flaky, version = serving(bundles[0]), serving(bundles[0])
    searches = Searches(flaky.index, fail_on=flaky.bundle.item_embeddings[3])
    queries = [RecommendQuery(vector=v.tolist(), k=5) for v in version.bundle.item_embeddings[:6]]
    answers = Recommender(flaky).answer_with(flaky, queries)
    assert [a.fallback for a in answers] == [None, None, None, "index error", None, None]
    assert searches.calls == 1 + len(queries)  # the batch, then each query alone
    alone = [Recommender(version).recommend(vector=q.vector, k=5) for q in queries]
    assert all(same(a, b) for i, (a, b) in enumerate(zip(alone, answers, strict=True)) if i != 3)


def batcher_of(recommender: Recommender, **options) -> RequestBatcher:
    defaults = {"window_s": 0.05, "max_batch": 64, "max_queue": 256, "timeout_s": 5.0}
    return RequestBatcher(recommender.answer, **{**defaults, **options})


def test_concurrent_requests_are_answered_in_one_batch_as_alone(bundles):
    recommender = Recommender(serving(bundles[0]))
    searches = Searches(recommender.active.index)
    sizes = []
    batcher = batcher_of(recommender, observe_batch=sizes.append)
    queries = [q for q in mixed_queries(recommender.active) if q.filter is None][:20]

    async def run():
        return await asyncio.gather(*(batcher.submit(q) for q in queries), return_exceptions=True)

    results = asyncio.run(run())
    assert sizes == [len(queries)] and searches.calls < len(queries)  # one batch, shared searches
    reference = serving(bundles[0])
    for query, result in zip(queries, results, strict=True):
        alone = Recommender(reference).answer_with(reference, [query])[0]
        assert same(alone, result if isinstance(result, Exception) else result[1]), query


def test_a_promotion_during_a_batch_never_mixes_versions(bundles):
    old, new, reference = serving(bundles[0]), serving(bundles[1]), serving(bundles[0])
    assert old.bundle_id != new.bundle_id
    recommender = Recommender(old)

    def promote():  # the swap lands while the batch is being answered
        recommender.active = new

    Searches(old.index, on_search=promote)
    started_on = recommender.active
    batcher = batcher_of(recommender)
    users = [str(u) for u in old.bundle.data.user_ids[:12]]

    async def run():
        first = [asyncio.ensure_future(batcher.submit(RecommendQuery(user_id=u, k=10))) for u in users[:6]]
        await asyncio.sleep(0)
        return await asyncio.gather(
            *first, *(batcher.submit(RecommendQuery(user_id=u, k=10)) for u in users[6:])
        )

    results = asyncio.run(run())
    versions = {id(version) for version, _ in results}
    assert versions == {id(started_on)} and recommender.active is new
    for user, (_, answer) in zip(users, results, strict=True):
        assert answer.bundle_id == old.bundle_id
        assert same(answer, Recommender(reference).recommend(user_id=user, k=10))
    # the next batch is answered wholly by the promoted version
    version, answer = asyncio.run(batcher.submit(RecommendQuery(user_id=users[0], k=10)))
    assert version is new and answer.bundle_id == new.bundle_id


def test_a_full_queue_refuses_with_overloaded(bundles):
    recommender = Recommender(serving(bundles[0]))
    refusals = []
    batcher = batcher_of(recommender, max_batch=2, max_queue=2, observe_refusal=refusals.append)
    user = str(recommender.active.bundle.data.user_ids[0])

    async def run():
        return await asyncio.gather(
            *(batcher.submit(RecommendQuery(user_id=user, k=5)) for _ in range(3)), return_exceptions=True
        )

    results = asyncio.run(run())
    assert not isinstance(results[0], Exception) and not isinstance(results[1], Exception)
    assert isinstance(results[2], Overloaded) and "2 recommend requests are already waiting" in str(
        results[2]
    )
    assert refusals == ["queue full"] and batcher.queued == 0


def test_a_request_waiting_past_its_timeout_is_refused(bundles):
    recommender = Recommender(serving(bundles[0]))
    batcher = batcher_of(recommender, window_s=0.05, timeout_s=0.01)
    user = str(recommender.active.bundle.data.user_ids[0])
    with pytest.raises(Overloaded, match="waited over 10 ms"):
        asyncio.run(batcher.submit(RecommendQuery(user_id=user, k=5)))


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="max_queue >= max_batch"):
        RequestBatcher(lambda q: (None, []), window_s=0.001, max_batch=8, max_queue=4, timeout_s=1)


async def post_all(app, bodies):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await asyncio.gather(*(client.post("/v1/recommend", json=b) for b in bodies))


def test_http_answers_with_and_without_batching_are_equal(bundles):
    bodies = [{"user_id": str(u), "k": 20} for u in bundles[0].data.user_ids[:16]]
    bodies += [{"user_id": "nobody", "k": 3}, {"recent_items": ["no-such-item"], "k": 5}, {"k": 5}]
    answers = {}
    for window in (0.0, 20.0):
        app = create_app(ServiceSettings(batch_window_ms=window), Recommender(serving(bundles[0])))
        responses = asyncio.run(post_all(app, bodies))
        answers[window] = [(r.status_code, {**r.json(), "took_ms": None}) for r in responses]
    assert answers[0.0] == answers[20.0]
    assert [status for status, _ in answers[20.0]][-3:] == [200, 422, 422]


def test_http_refuses_with_503_and_a_message_when_the_queue_is_full(bundles):
    settings = ServiceSettings(batch_window_ms=50, batch_max_size=2, batch_queue_limit=2)
    app = create_app(settings, Recommender(serving(bundles[0])))
    user = str(bundles[0].data.user_ids[0])
    responses = asyncio.run(post_all(app, [{"user_id": user, "k": 5}] * 6))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert "overloaded" in refused.json()["detail"] and refused.headers["retry-after"] == "1"


@pytest.mark.parametrize("backend", ["faiss:HNSW16", "faiss:Flat", "exact"])
def test_history_masking_is_the_index_own_exclusion(bundles, backend):
    """The service's answers are the index's own history masking (`exclude=`; FAISS masks around its
    lean path the same way, in the index)."""
    version = serving(bundles[0], backend)
    recommender, data = Recommender(version), version.bundle.data
    for user, k, flt in itertools.product(range(30), (5, 50), (None, {"deny_ids": list(range(0, 400, 5))})):
        answer = recommender.recommend(user_id=str(data.user_ids[user]), k=k, filter=flt)
        seen = data.sequence(user)
        own = version.index.search(answer.query, k, filter=flt, exclude=[seen])
        keep = own.ids[0] >= 0
        assert np.array_equal(answer.ids, own.ids[0][keep]), (user, k, flt)
        assert np.array_equal(answer.scores, own.scores[0][keep])
        assert not np.isin(answer.ids, seen).any()


def test_batch_settings_are_validated_with_a_clear_message():
    with pytest.raises(RecIndexError, match="batch_queue_limit .* at least batch_max_size \\(64\\)"):
        load_settings(batch_queue_limit=10)
    with pytest.raises(RecIndexError, match="RECINDEX_BATCH_WINDOW_MS.*from 0 to 100"):
        load_settings(batch_window_ms=500)
    assert load_settings(batch_window_ms=0).batch_window_ms == 0

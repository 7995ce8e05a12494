"""Searches that wait on a server (index.waits_on_server, the Milvus backend) run in worker threads, so
the service's event loop keeps taking requests meanwhile; in-process searches stay on the loop."""

import asyncio
import threading

import httpx
import numpy as np
import pytest

from recindex.index.exact_index import ExactIndex
from recindex.pipelines import load_bundle
from recindex.serve.app import create_app
from recindex.serve.batching import RequestBatcher
from recindex.serve.recommender import Recommender, RecommendQuery, ServingVersion
from recindex.serve.settings import ServiceSettings

DATASET = "synthetic:n_users=120,n_items=300,seed=23"
WAIT_S = 3.0  # how long a search waits for the loop to run; a search on the loop never sees it


class ServerLikeIndex(ExactIndex):
    """An exact index whose searches wait, as on a server, until the event loop has run (`loop_ran`),
    and record the thread they ran in."""

    waits_on_server = True

    def __init__(self, dim: int):
        super().__init__(dim)
        self.loop_ran = threading.Event()
        self.threads: set[int] = set()
        self.saw_loop: list[bool] = []

    def _search(self, *args, **kwargs):
        self.threads.add(threading.get_ident())
        self.saw_loop.append(self.loop_ran.wait(WAIT_S))
        return super()._search(*args, **kwargs)


class InProcessIndex(ServerLikeIndex):
    waits_on_server = False

    def _search(self, *args, **kwargs):
        self.threads.add(threading.get_ident())
        return ExactIndex._search(self, *args, **kwargs)


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle(DATASET))


def version_with(bundle, index_class) -> ServingVersion:
    index = index_class(bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    return ServingVersion.of(bundle, index)


async def while_the_loop_runs(index, requests):
    """Run `requests` (awaitables) while another task on the loop marks that the loop ran."""

    async def mark():
        await asyncio.sleep(0.01)
        index.loop_ran.set()

    marker = asyncio.ensure_future(mark())
    results = await asyncio.gather(*requests)
    await marker
    return results


@pytest.mark.parametrize("batched", [False, True])
def test_a_search_that_waits_on_a_server_leaves_the_event_loop_free(bundle, batched):
    version = version_with(bundle, ServerLikeIndex)
    app = create_app(ServiceSettings(batch_window_ms=5.0 if batched else 0.0), Recommender(version))
    users = [str(u) for u in bundle.data.user_ids[:6]]

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            posts = [client.post("/v1/recommend", json={"user_id": u, "k": 10}) for u in users]
            return await while_the_loop_runs(version.index, posts)

    loop_thread, responses = threading.get_ident(), asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * len(users)
    assert all(version.index.saw_loop), "a search held the event loop"
    assert loop_thread not in version.index.threads
    alone = Recommender(version_with(bundle, InProcessIndex))
    for user, response in zip(users, responses, strict=True):
        expected = alone.recommend(user_id=user, k=10)
        assert [i["item_id"] for i in response.json()["items"]] == [
            str(bundle.data.item_ids[i]) for i in expected.ids
        ]


def test_in_process_searches_stay_on_the_event_loop(bundle):
    version = version_with(bundle, InProcessIndex)
    batcher = RequestBatcher(
        Recommender(version).answer,
        window_s=0.005,
        max_batch=8,
        max_queue=64,
        timeout_s=5.0,
        in_thread=lambda: version.index.waits_on_server,
    )
    users = [str(u) for u in bundle.data.user_ids[:4]]

    async def run():
        return threading.get_ident(), await asyncio.gather(
            *(batcher.submit(RecommendQuery(user_id=u, k=5)) for u in users)
        )

    loop_thread, _ = asyncio.run(run())
    assert version.index.threads == {loop_thread}

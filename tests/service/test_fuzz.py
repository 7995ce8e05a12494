"""API fuzzing: schemathesis generates requests from the OpenAPI schema; no response may be a 500."""

import numpy as np
import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')"
)

from hypothesis import HealthCheck, given, settings  # noqa: E402

from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import make_index  # noqa: E402
from recindex.serve.app import create_app  # noqa: E402
from recindex.serve.items import ItemWriter  # noqa: E402
from recindex.serve.recommender import Recommender, ServingVersion  # noqa: E402
from recindex.serve.registry import BundleRegistry  # noqa: E402
from recindex.serve.settings import ServiceSettings  # noqa: E402
from recindex.serve.snapshots import Compactor  # noqa: E402
from recindex.serve.state import ServiceState  # noqa: E402
from recindex.serve.wal import WriteAheadLog  # noqa: E402

DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=11"


@pytest.fixture(scope="module")
def api_schema(tiny_bundle, tmp_path_factory):
    bundle = load_bundle(tiny_bundle(DATASET))
    index = make_index("exact", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    version = ServingVersion.of(bundle, index)
    writer = ItemWriter(version, WriteAheadLog(tmp_path_factory.mktemp("wal") / "items.wal").open())
    recommender = Recommender(version)
    state_dir = tmp_path_factory.mktemp("state")
    registry = BundleRegistry(recommender, writer, state_dir, 0.9)
    compactor = Compactor(writer, ServiceState(state_dir), every_records=0)  # not started: on request only
    app = create_app(
        ServiceSettings(api_keys=["fuzz"], max_k=50), recommender, writer, registry, compactor=compactor
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_request_gets_a_server_error(api_schema):
    # Each operation's strategy is driven by hypothesis directly (rather than schemathesis's pytest
    # plugin, which does not follow every pytest release).
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            case.headers = {**(case.headers or {}), "X-API-Key": "fuzz"}
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
            )

        no_server_error()

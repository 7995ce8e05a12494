"""The web page end to end: a real browser (headless Chromium via Playwright) against a real server.

The page is plain JavaScript that only a browser runs, so the API tests cannot see it break. Here a
uvicorn server answers over a small trained bundle and the page is driven as a person would: pick a
user, recommend, read history and results, hit the fallback and a bad filter, click through to similar
items, and read the Index tab. A screenshot check makes sure the results render as pixels, not just DOM.

Skipped when Playwright or a Chromium executable is missing (RECINDEX_CHROMIUM names one; the Debian
package's /usr/bin/chromium is the default). Browsers are never downloaded.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)


def _chromium() -> str | None:
    configured = os.environ.get("RECINDEX_CHROMIUM", "/usr/bin/chromium")
    if Path(configured).is_file() and os.access(configured, os.X_OK):
        return configured
    return shutil.which("chromium")


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip(
        "no chromium executable (install Debian's chromium or set RECINDEX_CHROMIUM)", allow_module_level=True
    )

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402

from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import item_attributes, make_index  # noqa: E402
from recindex.serve.app import MAX_HISTORY_SHOWN, create_app  # noqa: E402
from recindex.serve.recommender import Recommender, ServingVersion  # noqa: E402
from recindex.serve.settings import ServiceSettings  # noqa: E402

DATASET = "synthetic:n_users=120,n_items=50,seed=5"
K = 20
# without the background-networking flags Chromium stalls on update and sync calls in a closed network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _serve(app):
    """Run `app` on a loopback port in a thread; yields its base URL, then stops it."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def _version(bundle, attributes=None) -> ServingVersion:
    """Exact search over the bundle, its items carrying `attributes` (default: the data's own), as
    `recindex serve` loads a bundle."""
    attributes = attributes or item_attributes(bundle.data)
    index = make_index("exact", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings, attributes=attributes)
    return ServingVersion.of(bundle, index, attributes=attributes)


@pytest.fixture(scope="module")
def served(tiny_bundle):
    """(base URL, serving version) of a live server on a loopback port."""
    version = _version(load_bundle(tiny_bundle(DATASET)))
    with _serve(create_app(ServiceSettings(), Recommender(version))) as base:
        yield base, version


BRANDS = ["acme", "globex", "acme", 'say "hi"', "acme"]


@pytest.fixture(scope="module")
def served_with_attributes(tiny_bundle):
    """A server whose items have a brand (text), a year (numbers) and a flag, as a catalogue would."""
    bundle = load_bundle(tiny_bundle(DATASET))
    n = len(bundle.item_embeddings)
    attributes = {
        "brand": [BRANDS[i % len(BRANDS)] for i in range(n)],
        "year": [1990 + i % 20 for i in range(n)],
        "in_stock": [i % 3 != 0 for i in range(n)],
    }
    with _serve(create_app(ServiceSettings(), Recommender(_version(bundle, attributes)))) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))  # a script error fails the test
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def _open_and_recommend(page, base: str) -> None:
    page.goto(base + "/")
    page.wait_for_function("document.querySelectorAll('#user-select option').length > 0")
    page.click("#recommend-button")
    page.wait_for_selector("#results .result-row")


def test_recommend_for_the_first_user_shows_history_results_and_timing(page, served):
    base, version = served
    _open_and_recommend(page, base)
    first_user = str(version.bundle.data.user_ids[0])
    assert page.input_value("#user-input") == first_user
    assert page.locator("#results .result-row").count() == K
    assert version.bundle_id in page.inner_text("#answered-by")
    page.wait_for_selector("#history .history-row")
    expected_history = min(len(version.bundle.data.sequence(0)), MAX_HISTORY_SHOWN)
    assert page.locator("#history .history-row").count() == expected_history

    answer = httpx.post(base + "/v1/recommend", json={"user_id": first_user, "k": K, "describe": True}).json()
    shown = page.locator("#results .result-row a.item").all_inner_texts()
    assert shown == [item["item_id"] for item in answer["items"]]
    assert "no fallback" in page.inner_text("#fallback")
    latency = page.inner_text("#latency")
    assert float(latency.split()[0]) > 0, latency


def test_results_render_as_pixels(page, served, tmp_path):
    base, _ = served
    _open_and_recommend(page, base)
    image = Image.open(io.BytesIO(page.locator("#results").screenshot())).convert("RGB")
    assert image.height > K * 10, image.size
    pixels = np.asarray(image)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    grey = np.asarray(image.convert("L"), dtype=float)
    # text on a white table gives many shades after anti-aliasing; a blank or solid box gives a few
    assert colours > 10 or grey.std() > 10, (colours, grey.std())
    page.screenshot(path=str(tmp_path / "web_page.png"), full_page=True)


def test_unknown_user_falls_back_and_a_bad_filter_shows_the_servers_message(page, served):
    base, _ = served
    _open_and_recommend(page, base)
    page.fill("#user-input", "no-such-user")
    page.click("#recommend-button")
    page.wait_for_function("document.getElementById('fallback').textContent.includes('unknown user')")
    assert page.locator("#results .result-row").count() == K
    assert page.is_hidden("#error")  # the fallback answered: that is not an error

    page.fill("#user-input", "")
    page.fill("#filter-input", "price >")
    page.click("#recommend-button")
    page.wait_for_selector("#error", state="visible")
    message = httpx.post(
        base + "/v1/recommend",
        json={"user_id": page.input_value("#user-select"), "k": K, "filter": {"where": "price >"}},
    ).json()["detail"]
    assert message and message in page.inner_text("#error")


def test_clicking_a_result_shows_similar_items(page, served):
    base, _ = served
    _open_and_recommend(page, base)
    link = page.locator("#results .result-row a.item").first
    item = link.inner_text()
    link.click()
    page.wait_for_selector("#similar-title", state="visible")
    assert item in page.inner_text("#similar-title")
    page.wait_for_function("document.querySelectorAll('#results .result-row').length > 0")
    shown = page.locator("#results .result-row a.item").all_inner_texts()
    assert shown and item not in shown  # the trigger item is excluded from its own neighbours


def test_index_tab_shows_the_active_bundle_versions_and_no_swaps(page, served, tmp_path):
    base, version = served
    page.goto(base + "/#index")
    page.wait_for_selector("#versions tbody tr.version-row")
    assert page.is_visible("#index-view") and page.is_hidden("#recommend-view")
    assert version.bundle_id in page.inner_text("#active-bundle")
    assert page.locator("#versions tbody tr.version-row").count() == 1
    assert "no swaps yet" in page.inner_text("#swap-history")
    page.screenshot(path=str(tmp_path / "web_index.png"), full_page=True)


def test_the_api_docs_render_with_the_network_off(browser, served):
    """/docs is Swagger UI: its script and styles must come from this service, not a CDN."""
    base, _ = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def loopback_only(route):  # the network is off: only this server answers
        url = route.request.url
        if url.startswith(base + "/"):
            route.continue_()
        else:
            outside.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", loopback_only)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(base + "/docs")
        page.wait_for_selector(".swagger-ui .opblock")
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        operations = httpx.get(base + "/openapi.json").json()["paths"]
        expected = sum(len(methods) for methods in operations.values())
        assert len(paths) == expected and "/v1/recommend" in [p.strip() for p in paths], paths
        assert not outside, f"/docs fetched from outside the service: {outside}"
    finally:
        context.close()


def _placeholder(page, base: str) -> str:
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('filter-input').placeholder !== 'attribute filter'")
    return page.get_attribute("#filter-input", "placeholder")


def _recommend_with(page, where: str) -> None:
    page.wait_for_function("document.querySelectorAll('#user-select option').length > 0")
    page.fill("#filter-input", where)
    page.click("#recommend-button")
    page.wait_for_selector("#results .result-row")
    assert page.is_hidden("#error"), page.inner_text("#error")


def test_the_filter_placeholder_is_a_working_filter_on_this_bundles_attributes(page, served):
    base, _ = served
    attributes = httpx.get(base + "/v1/attributes").json()["attributes"]
    # synthetic items hold several `attr=N` tokens: a multi-valued attribute, filtered with contains
    tags = next(a for a in attributes if a["name"] == "attr")
    assert tags["kind"] == "str_list" and tags["items"] > 0
    placeholder = _placeholder(page, base)
    popularity = next(a for a in attributes if a["name"] == "popularity")  # the only number here
    expected = f'contains(attr, "{tags["examples"][0]}") and popularity >= {popularity["examples"][1]}'
    assert placeholder == expected, placeholder  # the data's own attribute first
    _recommend_with(page, placeholder)
    assert page.inner_text("#fallback") == "no fallback"  # the index answered, not popularity


def test_the_filter_placeholder_uses_text_attributes_where_the_bundle_has_them(page, served_with_attributes):
    base = served_with_attributes
    attributes = {a["name"]: a for a in httpx.get(base + "/v1/attributes").json()["attributes"]}
    years = attributes["year"]["examples"]
    assert attributes["brand"]["examples"][0] == "acme"  # the most common brand first
    assert years[0] < years[1] < years[2]  # min, median, max
    placeholder = _placeholder(page, base)
    assert placeholder == f'brand == "acme" and year >= {years[1]}', placeholder
    assert "brand (str)" in page.get_attribute("#filter-input", "title")
    _recommend_with(page, placeholder)

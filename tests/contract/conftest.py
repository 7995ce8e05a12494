"""Fixtures of the contract suite: the backend under test, and the indexes it makes for one check.

The backend fixture is module-scoped, so pytest runs every check of one backend before the next
backend's: a backend's filled index is built once for the checks that only read it (`shared`), and
each check that writes gets an index of its own (`subject.filled()`).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from index_backends import BY_NAME, Backend, Material

from recindex.index.base import BaseIndex


class Subject:
    """One backend under test: makes its indexes, each in a folder of its own, and closes them."""

    def __init__(self, backend: Backend, folders, bundle, items, attributes, uri=None):
        self.backend = backend
        self._folders = folders  # pytest's tmp_path_factory
        self._bundle = bundle
        self._uri = uri  # the backend's server, where it runs on one
        self._items, self._attributes = items, attributes
        self.opened: list[BaseIndex] = []

    def make(self, dim: int, metric: str = "ip") -> BaseIndex:
        folder = self._folders.mktemp(re.sub(r"[^A-Za-z0-9]+", "-", self.backend.name))
        return self.track(self.backend.make(dim, metric, Material(folder, self._bundle, self._uri)))

    def filled(self, metric: str = "ip") -> BaseIndex:
        """The suite's items, with their attributes where the backend declares it stores attributes."""
        index = self.make(self._items.shape[1], metric)
        attributes = self._attributes if index.capabilities.attributes else None
        index.add(np.arange(len(self._items)), self._items, attributes=attributes)
        return index

    def track(self, index: BaseIndex) -> BaseIndex:
        self.opened.append(index)
        return index

    def close(self) -> None:
        for index in self.opened:
            if hasattr(index, "close"):  # engines with a connection or a thread pool
                index.close()


@pytest.fixture(scope="module")
def backend(request) -> Backend:
    chosen = BY_NAME[request.param]
    reason = chosen.missing()
    if reason:
        pytest.skip(reason)
    return chosen


def _subject(request, backend, tmp_path_factory) -> Subject:
    bundle = request.getfixturevalue("family_bundle")(backend.family) if backend.family else None
    uri = request.getfixturevalue("milvus_server")(backend.server) if backend.server else None
    module = request.module
    return Subject(backend, tmp_path_factory, bundle, module.ITEMS, module.ATTRS, uri)


@pytest.fixture
def subject(request, backend, tmp_path_factory):
    made = _subject(request, backend, tmp_path_factory)
    yield made
    made.close()


@pytest.fixture(scope="module")
def shared(request, backend, tmp_path_factory):
    """The backend's filled index, built once, for the checks that only read it."""
    made = _subject(request, backend, tmp_path_factory)
    yield made.filled()
    made.close()

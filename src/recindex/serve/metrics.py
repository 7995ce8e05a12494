"""Prometheus metrics of one service instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    def __init__(self, index_size: Callable[[], float], swaps: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "recindex_request_seconds",
            "Request latency by endpoint and status class.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "recindex_fallback",
            "Answers given by the popularity list, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.upsert_seconds = Histogram(
            "recindex_upsert_visible_seconds",
            "From receiving an item write to the index answering with it (log fsync included).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_items = Gauge(
            "recindex_index_items", "Items in the serving index.", registry=self.registry
        )
        self.index_items.set_function(index_size)
        self.swaps = Gauge("recindex_swaps", "Promotions and rollbacks since start.", registry=self.registry)
        self.swaps.set_function(swaps)
        self.batch_size = Histogram(
            "recindex_recommend_batch_size",
            "Recommend requests answered together in one batch (when batching is on).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.batch_refusals = Counter(
            "recindex_recommend_refused",
            "Recommend requests refused with 503 by the batcher, by reason (queue full, timeout).",
            ["reason"],
            registry=self.registry,
        )
        self.online_recall = Histogram(
            "recindex_online_index_recall",
            "Index recall against exact search on a sample of live unfiltered requests.",
            buckets=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0),
            registry=self.registry,
        )

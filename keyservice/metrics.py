"""What an operator scrapes from a key-service replica (`GET /metrics`, the
Prometheus text format through `prometheus_client`; docs/keyservice.md,
"Operating it"): releases and refusals, group-commit batch sizes and queue
waits, time under the writer lock, database work per release.

Each service has its own registry (tests run many in one process). Label
values come from the code only (outcomes, events, check names), never from a
request, so a caller cannot grow the series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .store import Store

__all__ = ["ServiceMetrics", "CONTENT_TYPE_LATEST"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.releases = Counter("sesemi_ks_releases", "Key releases answered, by outcome", ["outcome"], registry=r)
        self.refusals = Counter("sesemi_ks_refusals", "Refused calls, by event and check", ["event", "check"],
                                registry=r)
        self.batch_size = Histogram("sesemi_ks_commit_batch_size", "Log entries per group commit",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("sesemi_ks_commit_queue_wait_seconds",
                                    "Time a batch's leader waited before it could commit", buckets=_WAIT_BUCKETS,
                                    registry=r)

    def batch(self, size: int, waited_s: float) -> None:
        self.batch_size.observe(size)
        self.queue_wait.observe(waited_s)

    def watch_store(self, store: Store) -> None:
        """The store's own counters, read at scrape time."""
        self.registry.register(_StoreCollector(store))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    _COUNTERS = (
        ("sesemi_ks_write_transactions", "Write transactions committed", "write_txs"),
        ("sesemi_ks_write_lock_held_seconds", "Seconds inside the serialized writer section", "lock_held_s"),
        ("sesemi_ks_write_lock_cpu_seconds", "CPU seconds of the writer section's threads", "lock_cpu_s"),
        ("sesemi_ks_log_leaves_written", "Log leaves this replica appended", "leaves"),
        ("sesemi_ks_log_follows", "Follows of the log that queried the database", "syncs"),
        ("sesemi_ks_db_reads", "Autocommit database reads", "reads"),
        ("sesemi_ks_row_cache_hits", "Checked rows served from memory", "row_cache_hits"),
    )

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.store.stats
        for name, doc, attr in self._COUNTERS:
            yield CounterMetricFamily(name, doc, value=getattr(s, attr))
        yield GaugeMetricFamily("sesemi_ks_log_tree_size", "Leaves in the log (the signed checkpoint's size)",
                                value=self.store.head().size)

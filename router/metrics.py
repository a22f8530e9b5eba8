"""`GET /metrics` of the router and its front end, in Prometheus' text format
through `prometheus_client` (docs/packing.md, "Operating it"): the counters
that `/stats` shows, as counters, and each pack's queue length as a gauge.
Label values are pack and router names from the configuration, never from a
request. Under several front-end workers each scrape answers the worker that
took it, as `/stats` does."""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from flask import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

Snapshot = Callable[[], tuple[Mapping[str, int], Mapping[str, Mapping[str, int]], Mapping[str, Mapping[str, int]]]]


class _Collector:
    def __init__(self, prefix: str, snapshot: Snapshot) -> None:
        self.prefix = prefix
        self.snapshot = snapshot

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters, labelled_counters, gauges = self.snapshot()
        for key, value in sorted(counters.items()):
            yield CounterMetricFamily(f"{self.prefix}_{key}", f"{key.replace('_', ' ')} (as /stats counts)",
                                      value=value)
        for name, by_label in sorted(labelled_counters.items()):
            yield self._family(CounterMetricFamily, name, by_label)
        for name, by_label in sorted(gauges.items()):
            yield self._family(GaugeMetricFamily, name, by_label)

    def _family(self, kind: type, name: str, by_label: Mapping[str, int]) -> CounterMetricFamily | GaugeMetricFamily:
        """`name` is "label:metric": one series per label value."""
        label, _, metric = name.partition(":")
        fam = kind(f"{self.prefix}_{metric}", f"{metric.replace('_', ' ')} per {label}", labels=[label])
        for value_label, value in sorted(by_label.items()):
            fam.add_metric([value_label], value)
        return fam


class Exporter:
    """One registry per app. `snapshot()` returns (counters, {"label:metric":
    {label value: count}}, {"label:metric": {label value: gauge}})."""

    def __init__(self, prefix: str, snapshot: Snapshot) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(prefix, snapshot))

    def response(self) -> Response:
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)

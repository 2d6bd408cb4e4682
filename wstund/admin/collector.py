"""Gauges read from the Hub at scrape time (nothing to keep in step while serving)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..hub import Hub


class HubCollector(Collector):
    """Connections, rooms, members and in-flight work of one Hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        yield GaugeMetricFamily(
            "wstund_connections", "Relay WebSocket connections open now", hub.connection_count
        )
        rooms = GaugeMetricFamily(
            "wstund_rooms", "Rooms (instances) open now, by service", labels=["service"]
        )
        members = GaugeMetricFamily(
            "wstund_members", "Members seated in rooms now, by service", labels=["service"]
        )
        for service in hub.services.all():
            instances = hub.instances_of(service.name)
            rooms.add_metric([service.name], len(instances))
            members.add_metric([service.name], sum(len(i.members) for i in instances))
        yield rooms
        yield members
        yield GaugeMetricFamily(
            "wstund_inflight_requests",
            "Requests a graceful stop would wait for",
            hub.inflight.count,
        )
        yield GaugeMetricFamily("wstund_uptime_seconds", "Seconds since start", hub.uptime())
        if hub.cluster is not None:
            yield from hub.cluster.gauges()


def register(hub: Hub) -> None:
    """Add the Hub's gauges to its own metrics registry."""
    hub.metrics.registry.register(HubCollector(hub))

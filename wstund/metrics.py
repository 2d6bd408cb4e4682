"""Prometheus metrics of one daemon, in a registry owned by its Hub (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, ProcessCollector


class Metrics:
    """Counters and histograms that code paths update; gauges are collected from the Hub."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_* (CPU, RSS, open fds, start time)
        self.build_info = Info("wstund_build", "The running build", registry=self.registry)
        self.relay_messages = Counter(
            "wstund_relay_messages",
            "Room frames relayed, by sender role",
            ["sender"],
            registry=self.registry,
        )
        self.relay_bytes = Counter(
            "wstund_relay_bytes",
            "Bytes of room frames received for relaying, by sender role",
            ["sender"],
            registry=self.registry,
        )
        self.member_messages = self.relay_messages.labels("member")
        self.owner_messages = self.relay_messages.labels("owner")
        self.member_bytes = self.relay_bytes.labels("member")
        self.owner_bytes = self.relay_bytes.labels("owner")
        self.slow_consumer_drops = Counter(
            "wstund_slow_consumer_drops",
            "Sockets closed with 4008 because they did not read fast enough",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "wstund_connections_refused",
            "Sockets refused at server.max_connections or server.max_connections_per_ip",
            registry=self.registry,
        )
        self.tunnel_requests = Counter(
            "wstund_tunnel_requests",
            "Tunnelled HTTP requests answered, by status code",
            ["status"],
            registry=self.registry,
        )
        self.tunnel_request_seconds = Histogram(
            "wstund_tunnel_request_seconds",
            "Time a tunnelled request took, from its arrival to the end of its response",
            registry=self.registry,
        )
        self.http_request_seconds = Histogram(
            "wstund_http_request_seconds",
            "HTTP request latency, from arrival to the end of the response, by method and status",
            ["method", "status"],
            registry=self.registry,
        )

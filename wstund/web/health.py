"""``/health`` (liveness, in MoosicBox's form) and ``/ready`` (for load balancers), public.

``GET /health`` answers 200 ``{"healthy": true, "hash": "<build id>"}`` as MoosicBox's tunnel
server does, so its monitors work unchanged. ``GET /ready`` answers 200 while the daemon
serves and 503 while it starts or stops, so a balancer stops sending before the listeners go.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, jsonify
from quart_trio import QuartTrio

from ..hub import Hub
from .errors import json_error


def create_blueprint(hub: Hub, build: str) -> Blueprint:
    """The two probes of ``hub``; ``build`` is the id ``/health`` reports."""
    probes = Blueprint("probes", __name__)

    @probes.get("/health")
    async def health() -> Response:
        return jsonify({"healthy": True, "hash": build})

    @probes.get("/ready")
    async def ready() -> Response:
        state = "stopping" if hub.stopping else hub.phase
        response = jsonify({"ready": state == "ready", "state": state})
        response.status_code = 200 if state == "ready" else 503
        response.headers["Cache-Control"] = "no-store"
        return response

    return probes


def create_metrics_app(hub: Hub, build: str) -> QuartTrio:
    """The app of ``metrics.bind`` (a loopback address): ``/metrics`` without a token, and the
    probes. Nothing else is served there."""
    app = QuartTrio("wstund-metrics", static_folder=None)
    app.register_blueprint(create_blueprint(hub, build))

    @app.get("/metrics")
    async def metrics() -> Response:
        if not hub.config.metrics.enabled:
            return json_error(404, "metrics_disabled", "metrics are off (metrics.enabled)")
        body = generate_latest(hub.metrics.registry)
        return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)

    return app

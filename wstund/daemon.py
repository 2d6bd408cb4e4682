"""The ``wstund`` entry point: one ``trio.run`` with Hypercorn, the Hub and signal handling."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import NoReturn

import click
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.utils import wrap_app

from . import __version__, buildinfo, hypercorn_ws, sdnotify, statelock
from .admin import collector
from .admin import token as admin_token
from .admin.app import create_admin_app, ops_blueprint, secure_socket, socket_path
from .admin.reload import ReloadOutcome, changed_keys, keep_restart_only
from .cluster.forward import carried_client
from .cluster.node import Cluster
from .config import Config, ConfigError, bind_problems, load, state_dir
from .forwarded import Trusted, TrustedProxies, client_address
from .hub import Hub
from .logs import setup_logging as configure_logging
from .marketplace import store as marketplace_store
from .moosicbox.front import MoosicBoxFront, leave_moosicbox_sockets
from .relay import endpoint
from .transport.asgiws import asgi_lane_route, refuse_with_503
from .transport.fdlimit import ensure_fd_limit
from .transport.server import Lanes, LaneSettings, Transport
from .tunnel.front import TunnelFront
from .tunnel.lane import agent_lane_route
from .web import failures, health
from .web.access import AccessLog
from .web.app import create_app
from .web.closing import FinishResponses
from .web.untrusted import UntrustedContent

log = logging.getLogger("wstund")
# Seconds Hypercorn keeps connections past shutdown_grace, for the 1001 close handshakes.
CLOSE_MARGIN = 2.0


def hypercorn_config(config: Config) -> HypercornConfig:
    """Hypercorn settings derived from ours: binds, frame size, heartbeat, idle timeout."""
    hyper = HypercornConfig()
    hyper.bind = list(config.server.bind)
    hyper.websocket_max_message_size = config.relay.max_message_size
    # Not Hypercorn's pings nor read_timeout (see hypercorn_ws): our keepalive per WebSocket.
    hypercorn_ws.configure(hyper, config.relay.heartbeat_interval, config.relay.idle_timeout)
    hyper.graceful_timeout = config.server.shutdown_grace + CLOSE_MARGIN
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.include_server_header = False  # tunnelled responses keep their own Server header
    hyper.keep_alive_timeout = config.server.keep_alive_timeout
    return hyper


def listening_sockets(hyper: HypercornConfig, send_timeout: float) -> Sockets:
    """Hypercorn's listening sockets, with TCP_USER_TIMEOUT set (accepted sockets inherit it).

    Hypercorn shields its socket writes from cancellation, so a peer that never reads would
    hold its connection (and a graceful stop) forever; the kernel timeout breaks that write.
    """
    try:
        sockets = hyper.create_sockets()
    except OSError as exc:
        raise ConfigError(
            [f"server.bind: cannot listen on {', '.join(hyper.bind)}: {exc.strerror or exc}"]
        ) from None
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        if send_timeout and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(send_timeout * 1000))
        sock.listen(hyper.backlog)
    return sockets


def lane_settings(config: Config, proxies: Trusted | None = None) -> LaneSettings:
    """The transport's limits, read from the live config for each new connection; sockets of
    the trusted ``proxies`` are exempt from the per-address cap."""
    secret = config.cluster.secret

    def client(peer: str, headers: list[tuple[bytes, bytes]]) -> str:
        """The caller: the one another node carried a WebSocket for (with the cluster secret),
        or the one a trusted proxy forwarded, or the peer itself."""
        carried = carried_client(headers, secret) if secret else None
        if carried is not None:
            return carried
        return (client_address(peer, headers, proxies).address or peer) if proxies else peer

    return LaneSettings(
        uncapped=(lambda address: proxies.verdict(address)[1]) if proxies else lambda a: False,
        client=client,
        max_connections=config.server.max_connections,
        max_connections_per_ip=config.server.max_connections_per_ip,
        head_timeout=config.server.head_timeout,
        max_message_size=config.relay.max_message_size,
        ping_interval=config.relay.heartbeat_interval,
        idle_timeout=config.relay.idle_timeout,
        send_buffer=config.relay.send_buffer,
    )


def apply_live_limits(hyper: HypercornConfig, config: Config) -> None:
    """Hypercorn reads its config per new connection: update the limits a reload may change."""
    fresh = hypercorn_config(config)
    for name in (
        "websocket_max_message_size",
        "keep_alive_timeout",
        hypercorn_ws.PING_INTERVAL,
        hypercorn_ws.IDLE_TIMEOUT,
    ):
        setattr(hyper, name, getattr(fresh, name))
    hyper.graceful_timeout = config.server.shutdown_grace + CLOSE_MARGIN


def admin_hypercorn_config(config: Config, path: Path) -> HypercornConfig:
    """The admin socket's Hypercorn settings: a unix bind created owner-only, then chmod'ed."""
    hyper = HypercornConfig()
    hyper.bind = [f"unix:{path}"]
    hyper.umask = 0o177
    hyper.graceful_timeout = config.server.shutdown_grace + CLOSE_MARGIN
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    return hyper


class Daemon:
    """A running wstund: its Hub, its servers, and the event that stops it."""

    def __init__(self, config: Config) -> None:
        self.hub = Hub(config, state_dir(config))
        if config.cluster.redis_url:
            self.hub.cluster = Cluster(self.hub)
        self.admin_token_made = admin_token.apply(config, self.hub.state_dir)
        marketplace_store.load_installed(self.hub)
        self.app = create_app(self.hub)
        self.binds: list[str] = []
        self._stop = trio.Event()
        self._stop_now = trio.Event()  # a second stop: skip the drain delay
        self.config_path: Path | None = None
        self.hyper = hypercorn_config(config)
        self.admin_socket = socket_path(config)
        self.admin_app = create_admin_app(self.hub, self._reload_current, self._public_base)
        self.app.register_blueprint(ops_blueprint(self.hub, self._reload_current, over_tcp=True))
        self.build = buildinfo.build_id()
        self.hub.metrics.build_info.info({"version": __version__, "build": self.build})
        for app in (self.app, self.admin_app):
            app.register_blueprint(health.create_blueprint(self.hub, self.build))
        for app in (self.app, self.admin_app):
            failures.install(app)
        collector.register(self.hub)
        self.notifier = sdnotify.Notifier()
        self.transport: Transport | None = None

    def stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does); a second call skips the drain delay."""
        if self._stop.is_set():
            self._stop_now.set()
        self._stop.set()

    def reload(self, path: Path | None) -> ReloadOutcome:
        """Re-read the config; keep the old one if the new one is refused.

        Tokens, limits, log settings, services and tunnel settings change live; restart-only
        keys (binds, state dir, admin socket) keep their running values.
        """
        try:
            config = load(path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return ReloadOutcome(errors=exc.errors)
        if admin_token.apply(config, self.hub.state_dir):  # admin.token was deleted: a new one
            url = admin_token.login_url(
                self._public_base(), config.server.admin_token, config.admin.host
            )
            log.warning("new admin token; admin page (log in once with this URL): %s", url)
        old = self.hub.config
        restart_needed = keep_restart_only(old, config)
        for key in restart_needed:
            log.warning("%s changed: restart wstund to apply it (keeping the running value)", key)
        changed = changed_keys(old, config)
        self.hub.config = config
        self.app.config["MAX_CONTENT_LENGTH"] = config.relay.max_message_size
        apply_live_limits(self.hyper, config)
        for instance in self.hub.instances.values():
            instance.inbox_bytes.limit = config.relay.max_inbox_bytes
        configure_logging(config.log.level, config.log.format)
        if self.admin_socket.exists():
            try:
                secure_socket(self.admin_socket, config)
            except (LookupError, OSError) as exc:
                log.error("admin socket: cannot apply admin.mode/admin.group: %s", exc)
        log.info("configuration reloaded; changed: %s", ", ".join(changed) or "nothing")
        return ReloadOutcome(changed=changed, restart_needed=restart_needed)

    def _reload_current(self) -> ReloadOutcome:
        return self.reload(self.config_path)

    def status_line(self) -> str:
        """The STATUS= text systemd shows: live connection and room counts."""
        hub = self.hub
        members = sum(len(i.members) for i in hub.instances.values())
        return (
            f"{hub.connection_count} connections, {len(hub.instances)} rooms, "
            f"{members} members, {hub.inflight.count} in flight"
        )

    async def run(
        self,
        config_path: Path | None = None,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``stop()``; then close sockets with 1001 and wait for them to go."""
        self.config_path = config_path
        hypercorn_ws.apply()  # peers' close codes reach the app; idle WebSockets only
        servers_done = trio.Event()
        latency = self.hub.metrics.http_request_seconds
        limit, needed = ensure_fd_limit(self.hub.config.server.max_connections)
        if limit < needed:
            log.warning(
                "only %d file descriptors for server.max_connections = %d (%d wanted): raise "
                "LimitNOFILE (ulimit -n) or lower max_connections",
                limit,
                self.hub.config.server.max_connections,
                needed,
            )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.hub.run)
                nursery.start_soon(self.hub.tunnels.run)
                nursery.start_soon(self._watch_signals, config_path)
                async with trio.open_nursery() as servers:
                    sockets = listening_sockets(self.hyper, self.hub.config.server.send_timeout)
                    front = TunnelFront(MoosicBoxFront(self.app, self.hub), self.hub)
                    untrusted = UntrustedContent(front, self.hub)
                    public = TrustedProxies(
                        FinishResponses(AccessLog(untrusted, latency, "public")),
                        lambda: self.hub.config.server.trusted_proxies,
                    )
                    relay_route = leave_moosicbox_sockets(self.hub, endpoint.lane_route(self.hub))
                    agent_route = agent_lane_route(front)
                    # Every other upgrade: the app minus the access log the lane writes itself.
                    asgi_route = asgi_lane_route(
                        TrustedProxies(untrusted, public.trusted),
                        lambda: self.hub.config.relay.permessage_deflate,
                    )
                    self.transport = Transport(
                        wrap_app(public, self.hyper.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
                        self.hyper,
                        Lanes(
                            lambda head: relay_route(head) or agent_route(head) or asgi_route(head),
                            refuse_with_503(
                                endpoint.refuse_lane,
                                lambda head: relay_route(head) or agent_route(head),
                            ),
                            lambda: lane_settings(self.hub.config, public.networks()),
                        ),
                        self.hub.metrics.connections_refused.inc,
                    )
                    self.binds = await servers.start(self.transport.serve, sockets, servers_done)
                    if self.hub.cluster is not None:
                        self.hub.cluster.listening(self.binds)
                    await self._serve_admin(
                        servers,
                        servers_done,
                        FinishResponses(AccessLog(self.admin_app, latency, "admin")),
                    )
                    await self._serve_metrics(servers, servers_done)
                    log.info("wstund %s listening on %s", __version__, ", ".join(self.binds))
                    log.info("admin socket at %s", self.admin_socket)
                    self.hub.phase = "ready"
                    self._announce_admin_page()
                    task_status.started(self.binds)
                    await self._notify_ready(nursery)
                    await self._stop.wait()
                    self.hub.phase = "stopping"
                    await self.notifier.notify("STOPPING=1")
                    drain = self.hub.config.server.drain_delay
                    if drain > 0:
                        log.info(
                            "stopping: /ready answers 503; listeners close in %g s"
                            " (server.drain_delay)",
                            drain,
                        )
                        with trio.move_on_after(drain):
                            await self._stop_now.wait()
                    log.info("stopping: closing %d connections", self.hub.connection_count)
                    # The transport closes its listeners now (new connections are refused) and
                    # gives open ones graceful_timeout; meanwhile in-flight work drains, then 1001.
                    servers_done.set()
                    await self.hub.shutdown(self.hub.config.server.shutdown_grace)
                nursery.cancel_scope.cancel()
        finally:
            self.notifier.close()
            with contextlib.suppress(OSError):
                self.admin_socket.unlink()

    def _public_base(self) -> str:
        """Where people reach this server: ``server.public_url``, else the first listener."""
        return self.hub.config.server.public_url or (self.binds[0] if self.binds else "")

    def _announce_admin_page(self) -> None:
        """Log the admin page's login URL once, when the admin token was just made."""
        base = self._public_base()
        if self.admin_token_made:
            url = admin_token.login_url(
                base, self.hub.config.server.admin_token, self.hub.config.admin.host
            )
            log.warning("admin page (log in once with this URL): %s", url)
        else:
            log.info("admin page at %s/admin; `wstunctl admin token` prints its login URL", base)

    async def _serve_admin(
        self, servers: trio.Nursery, done: trio.Event, app: FinishResponses
    ) -> None:
        """Start the admin app on its unix socket and give the socket its mode and group."""
        try:
            self.admin_socket.parent.mkdir(parents=True, exist_ok=True)
            hyper = admin_hypercorn_config(self.hub.config, self.admin_socket)
            sockets = hyper.create_sockets()
            for sock in sockets.insecure_sockets:
                sock.listen(hyper.backlog)
            # Its own accept loop and counts: the public sockets never take the admin's places.
            admin = Transport(
                wrap_app(app, hyper.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
                hyper,
                Lanes(
                    lambda head: None, endpoint.refuse_lane, lambda: lane_settings(self.hub.config)
                ),
            )
            await servers.start(admin.serve, sockets, done)
        except OSError as exc:
            raise ConfigError(
                [f"admin.socket: cannot listen on {self.admin_socket}: {exc.strerror or exc}"]
            ) from None
        try:
            secure_socket(self.admin_socket, self.hub.config)
        except (LookupError, OSError) as exc:
            raise ConfigError([f"admin.group/admin.mode: {exc}"]) from None

    async def _serve_metrics(self, servers: trio.Nursery, done: trio.Event) -> None:
        """Serve /metrics without a token on ``metrics.bind`` (a loopback address), if set."""
        bind = self.hub.config.metrics.bind
        if not bind:
            return
        hyper = HypercornConfig()
        hyper.bind = [bind]
        hyper.accesslog = None
        hyper.errorlog = logging.getLogger("hypercorn.error")
        hyper.graceful_timeout = self.hub.config.server.shutdown_grace + CLOSE_MARGIN
        app = health.create_metrics_app(self.hub, self.build)
        try:
            binds = await servers.start(
                functools.partial(
                    hypercorn_serve,
                    FinishResponses(app),  # type: ignore[arg-type]
                    hyper,
                    shutdown_trigger=done.wait,
                )
            )
        except OSError as exc:
            raise ConfigError([f"metrics.bind: cannot listen on {bind}: {exc.strerror}"]) from None
        log.info("metrics on %s", ", ".join(binds))

    async def _notify_ready(self, nursery: trio.Nursery) -> None:
        """Tell systemd we listen; keep STATUS= current and the watchdog fed."""
        if not self.notifier.enabled:
            return
        await self.notifier.notify("READY=1")
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            nursery.start_soon(sdnotify.watchdog, self.notifier, interval)
        # STATUS= is refreshed at least as often as the watchdog is fed (sent only on change).
        refresh = min(5.0, interval or 5.0)
        nursery.start_soon(sdnotify.report_status, self.notifier, self.status_line, refresh)

    async def _watch_signals(self, config_path: Path | None) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload(self.config_path)
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.stop()


# Young objects allocated between two cyclic-GC passes (CPython's default is 700). A relay with
# thousands of sockets allocates fast; fewer passes cut connect + join CPU (bench/relay.py).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Freeze what startup built (the app, imports: never scanned again) and collect young
    objects less often; garbage without cycles is freed by reference counting either way."""
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def setup_logging(level: str, fmt: str = "plain") -> None:
    """Log to stderr (journald picks it up), plain or JSON lines (``log.format``)."""
    configure_logging(level, fmt)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default $WSTUND_CONFIG or /etc/wstun/wstund.toml if present).",
)
@click.option("--bind", multiple=True, metavar="HOST:PORT", help="Listen here instead.")
@click.option("--check-config", is_flag=True, help="Validate the config, print OK or errors.")
@click.version_option(__version__, prog_name="wstund")
def main(config_path: Path | None, bind: tuple[str, ...], check_config: bool) -> None:
    """Run the wstund relay and tunnel daemon."""
    try:
        config = load(config_path)
        if bind:
            config.server.bind = list(bind)
            if problems := bind_problems(config.server.bind):
                raise ConfigError(problems)
    except ConfigError as exc:
        _fail(exc.errors)
    if check_config:
        click.echo("OK")
        return
    setup_logging(config.log.level, config.log.format)
    try:
        state = state_dir(config)
        with statelock.hold(state, socket_path(config)):
            daemon = open_daemon(config)
            tune_gc()
            trio.run(daemon.run, config_path)
    except* ConfigError as group:
        _fail([line for refused in _leaves(group) for line in refused.errors])
    log.info("stopped")


def _leaves(group: BaseExceptionGroup[ConfigError]) -> list[ConfigError]:
    """The ConfigErrors of a (possibly nested) exception group."""
    found: list[ConfigError] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def open_daemon(config: Config) -> Daemon:
    """A Daemon on ``config``; a state directory it cannot use is a ConfigError (one line)."""
    try:
        return Daemon(config)
    except (OSError, sqlite3.Error) as exc:
        where = config.server.state_dir or "the state directory"
        raise ConfigError([f"server.state_dir: cannot use {where}: {exc}"]) from None


def _fail(lines: list[str]) -> NoReturn:
    """Print each problem as one ``error:`` line and exit with status 1 (never a traceback)."""
    for line in lines:
        click.echo(f"error: {line}", err=True)
    sys.exit(1)

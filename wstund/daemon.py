"""The ``wstund`` entry point: one ``trio.run`` with Hypercorn, the Hub and signal handling."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path

import click
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from . import __version__
from .config import Config, ConfigError, load, state_dir
from .hub import Hub
from .marketplace import store as marketplace_store
from .web.app import create_app

log = logging.getLogger("wstund")


def hypercorn_config(config: Config) -> HypercornConfig:
    """Hypercorn settings derived from ours: binds, frame size, heartbeat, idle timeout."""
    hyper = HypercornConfig()
    hyper.bind = list(config.server.bind)
    hyper.websocket_max_message_size = config.relay.max_message_size
    hyper.websocket_ping_interval = config.relay.heartbeat_interval or None
    hyper.read_timeout = config.relay.idle_timeout or None  # type: ignore[assignment]
    hyper.graceful_timeout = config.server.shutdown_grace
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    return hyper


def listening_sockets(hyper: HypercornConfig, send_timeout: float) -> Sockets:
    """Hypercorn's listening sockets, with TCP_USER_TIMEOUT set (accepted sockets inherit it).

    Hypercorn shields its socket writes from cancellation, so a peer that never reads would
    hold its connection (and a graceful stop) forever; the kernel timeout breaks that write.
    """
    sockets = hyper.create_sockets()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        if send_timeout and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(send_timeout * 1000))
        sock.listen(hyper.backlog)
    return sockets


async def serve_app(
    app: object,
    hyper: HypercornConfig,
    sockets: Sockets,
    shutdown_trigger: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hypercorn's trio worker on our sockets, inside our own trio.run."""
    await worker_serve(
        wrap_app(app, hyper.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
        hyper,
        sockets=sockets,
        shutdown_trigger=shutdown_trigger.wait,
        task_status=task_status,
    )


class Daemon:
    """A running wstund: its Hub, its servers, and the event that stops it."""

    def __init__(self, config: Config) -> None:
        self.hub = Hub(config, state_dir(config))
        marketplace_store.load_installed(self.hub)
        self.app = create_app(self.hub)
        self.binds: list[str] = []
        self._stop = trio.Event()

    def stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does)."""
        self._stop.set()

    def reload(self, path: Path | None) -> None:
        """Re-read the config; keep the old one if the new one is refused."""
        try:
            config = load(path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        if config.server.bind != self.hub.config.server.bind:
            log.warning("server.bind changed: restart wstund to listen on %s", config.server.bind)
            config.server.bind = self.hub.config.server.bind
        self.hub.config = config
        log.info("configuration reloaded")

    async def run(
        self,
        config_path: Path | None = None,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``stop()``; then close sockets with 1001 and wait for them to go."""
        config = self.hub.config
        servers_done = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.hub.run)
            nursery.start_soon(self._watch_signals, config_path)
            async with trio.open_nursery() as servers:
                hyper = hypercorn_config(config)
                sockets = listening_sockets(hyper, config.server.send_timeout)
                self.binds = await servers.start(serve_app, self.app, hyper, sockets, servers_done)
                log.info("wstund %s listening on %s", __version__, ", ".join(self.binds))
                task_status.started(self.binds)
                await self._stop.wait()
                log.info("stopping: closing %d connections", self.hub.connection_count)
                await self.hub.shutdown(self.hub.config.server.shutdown_grace)
                servers_done.set()
            nursery.cancel_scope.cancel()

    async def _watch_signals(self, config_path: Path | None) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload(config_path)
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.stop()


def setup_logging(level: str) -> None:
    """Log to stderr (journald picks it up)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    except ConfigError as exc:
        for line in exc.errors:
            click.echo(f"error: {line}", err=True)
        sys.exit(1)
    if check_config:
        click.echo("OK")
        return
    setup_logging(config.log.level)
    daemon = Daemon(config)
    trio.run(daemon.run, config_path)
    log.info("stopped")

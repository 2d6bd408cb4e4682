"""``wstund-agent`` / ``wstunctl tunnel run``: options, logging, and the trio entry point."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import trio

from .session import Agent, AgentConfig, AuthenticationFailed

log = logging.getLogger("wstund.agent")


def read_secret(secret: str | None, secret_file: Path | None) -> str:
    """The secret from --secret (or WSTUN_TUNNEL_SECRET) or the first line of --secret-file."""
    if secret_file is not None:
        try:
            text = secret_file.read_text().strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read --secret-file: {exc}") from None
        if not text:
            raise click.UsageError(f"--secret-file {secret_file} is empty")
        return text.splitlines()[0].strip()
    if secret:
        return secret
    raise click.UsageError(
        "give the client secret with --secret-file, --secret or WSTUN_TUNNEL_SECRET"
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target")
@click.option(
    "--server",
    required=True,
    envvar="WSTUN_SERVER",
    help="wstund base URL, e.g. https://tunnel.example.org",
)
@click.option(
    "--client-id", required=True, envvar="WSTUN_CLIENT_ID", help="Registered tunnel client id."
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the client secret.",
)
@click.option(
    "--secret", envvar="WSTUN_TUNNEL_SECRET", help="The client secret (prefer --secret-file)."
)
@click.option(
    "--backoff-initial",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    help="First reconnect delay, seconds.",
)
@click.option(
    "--backoff-max",
    type=click.FloatRange(min=0.01),
    default=30.0,
    show_default=True,
    help="Longest reconnect delay, seconds.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def main(
    target: str,
    server: str,
    client_id: str,
    secret_file: Path | None,
    secret: str | None,
    backoff_initial: float,
    backoff_max: float,
    log_level: str,
) -> None:
    """Forward requests tunnelled through wstund to the local TARGET URL (http://127.0.0.1:8080)."""
    if not target.startswith(("http://", "https://")):
        raise click.UsageError(f"TARGET must be an http(s) URL, not {target!r}")
    if not server.startswith(("http://", "https://", "ws://", "wss://")):
        raise click.UsageError(f"--server must be an http(s) URL, not {server!r}")
    config = AgentConfig(
        server=server,
        client_id=client_id,
        secret=read_secret(secret, secret_file),
        target=target,
        backoff_initial=backoff_initial,
        backoff_max=max(backoff_max, backoff_initial),
    )
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    os.environ.pop("WSTUN_TUNNEL_SECRET", None)
    try:
        trio.run(Agent(config).run)
    except AuthenticationFailed as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None

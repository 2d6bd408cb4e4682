"""``wstunctl``: manage a running wstund over its admin socket (or a URL + admin token).

Tables for people, ``--json`` for scripts. Exit codes: 0 ok, 1 error, 2 usage, 3 unreachable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, ConfigError, load
from .client import AdminClient, CtlError


class Ctl:
    """Per-invocation settings: where the daemon is and how to print."""

    def __init__(self, client_args: dict[str, Any], as_json: bool) -> None:
        self.client_args = client_args
        self.as_json = as_json
        self._client: AdminClient | None = None

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            self._client = AdminClient(**self.client_args)
        return self._client

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.call(method, path, body)


def _seg(value: str) -> str:
    """One URL path segment."""
    return quote(value, safe="")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain text table: ``columns`` is (heading, key) pairs."""
    if not rows:
        return "(none)"

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if value is None or value == "" else str(value)

    cells = [[cell(row, key) for _, key in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, (h, _) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def pairs(data: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """``key: value`` lines for one object."""
    keys = keys or [k for k, v in data.items() if not isinstance(v, list | dict)]
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {data.get(k, '-')}" for k in keys)


def duration(seconds: Any) -> str:
    """Seconds as ``3d 4h 05m``, ``2h 05m``, ``5m 07s`` or ``42s``, for people reading uptimes."""
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def when(millis_or_seconds: Any) -> str:
    """A timestamp (ms or s since the epoch) as UTC text."""
    if not isinstance(millis_or_seconds, int | float) or millis_or_seconds <= 0:
        return "-"
    seconds = millis_or_seconds / 1000 if millis_or_seconds > 1e11 else millis_or_seconds
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def emit(ctl: Ctl, data: Any, human: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON (``--json``) or as ``human(data)``."""
    if ctl.as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(human(data))


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` on a subcommand too (``wstunctl status --json``)."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Ctl).as_json = True  # type: ignore[union-attr]

    return click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print JSON for scripts.",
    )(command)


pass_ctl = click.make_pass_decorator(Ctl)


class CtlGroup(click.Group):
    """Turns CtlError into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CtlError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        finally:
            ctl = ctx.find_object(Ctl)
            if ctl is not None and ctl._client is not None:
                ctl._client.close()


@click.group(cls=CtlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="WSTUN_ADMIN_SOCKET",
    help="Admin socket (default: from the config, else /run/wstun/admin.sock).",
)
@click.option("--url", envvar="WSTUN_URL", help="Talk HTTP to this URL instead of the socket.")
@click.option("--admin-token", envvar="WSTUN_ADMIN_TOKEN", help="Admin token (with --url).")
@click.option("--token", envvar="WSTUN_TOKEN", help="Server token, if the server has one.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def main(
    ctx: click.Context,
    socket: Path | None,
    url: str | None,
    admin_token: str | None,
    token: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Manage a running wstund."""
    ctx.obj = Ctl(
        {
            "socket": socket,
            "url": url,
            "admin_token": admin_token,
            "token": token,
            "timeout": timeout,
        },
        as_json,
    )


# -- admin token -------------------------------------------------------------------------------


@main.group()
def admin() -> None:
    """The admin token of the web admin page."""


@admin.command("token")
@json_option
@pass_ctl
def admin_token(ctl: Ctl) -> None:
    """Print the admin token and the /admin URL that logs a browser in (admin socket only)."""
    data = ctl.call("GET", "/_api/admin/token")
    emit(ctl, data, lambda d: f"{d['token']}\nlog in at: {d['url']}")


# -- status, version, reload, config ---------------------------------------------------------


@main.command()
@json_option
@pass_ctl
def status(ctl: Ctl) -> None:
    """Version, uptime, connections, rooms and members of the daemon."""
    data = ctl.call("GET", "/_api/status")
    emit(ctl, data, _status_text)


def _status_text(data: dict[str, Any]) -> str:
    text = pairs({**data, "uptime": duration(data.get("uptime"))})
    cluster = data.get("cluster")
    if not isinstance(cluster, dict):
        return text
    state = "linked" if cluster.get("available") else "Redis unavailable"
    nodes = table(
        cluster.get("nodes", []),
        [
            ("NODE", "node"),
            ("ADDRESS", "advertise_url"),
            ("ROOMS", "rooms"),
            ("MEMBERS", "members"),
            ("CONNECTIONS", "connections"),
        ],
    )
    return f"{text}\n\ncluster: node {cluster.get('node')}, {state}\n{nodes}"


@main.command()
@json_option
@pass_ctl
def version(ctl: Ctl) -> None:
    """wstunctl's version and, when reachable, the daemon's."""
    try:
        daemon: str | None = ctl.call("GET", "/_api/status").get("version")
    except CtlError:
        daemon = None
    data = {"wstunctl": __version__, "wstund": daemon}
    emit(ctl, data, lambda d: f"wstunctl {d['wstunctl']}\nwstund   {d['wstund'] or 'unreachable'}")


@main.command()
@json_option
@pass_ctl
def reload(ctl: Ctl) -> None:
    """Make the daemon re-read its config (like SIGHUP); exit 1 if it refuses the new one."""
    data = ctl.call("POST", "/_api/reload")

    def human(d: dict[str, Any]) -> str:
        lines = ["reloaded; changed: " + (", ".join(d.get("changed", [])) or "nothing")]
        for key in d.get("restart_needed", []):
            lines.append(f"note: {key} changed; restart wstund to apply it")
        return "\n".join(lines)

    emit(ctl, data, human)


@main.group()
def config() -> None:
    """Check config files."""


@config.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path, dir_okay=False))
@json_option
@pass_ctl
def config_check(ctl: Ctl, path: Path | None) -> None:
    """Validate PATH (default $WSTUND_CONFIG or /etc/wstun/wstund.toml); exit 1 if invalid."""
    target = path or Path(os.environ.get("WSTUND_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        load(target)
    except ConfigError as exc:
        if ctl.as_json:
            click.echo(json.dumps({"ok": False, "path": str(target), "errors": exc.errors}))
        else:
            for line in exc.errors:
                click.echo(f"error: {target}: {line}", err=True)
        sys.exit(1)
    emit(ctl, {"ok": True, "path": str(target)}, lambda d: f"OK {d['path']}")


# -- services ---------------------------------------------------------------------------------

SERVICE_COLUMNS = [
    ("NAME", "name"),
    ("ENABLED", "enabled"),
    ("VERSION", "version"),
    ("SOURCE", "source"),
    ("ROOMS", "instanceCount"),
    ("DESCRIPTION", "description"),
]
INSTANCE_COLUMNS = [
    ("UUID", "uuid"),
    ("SERVICE", "service"),
    ("NAME", "name"),
    ("USERS", "userCount"),
    ("OWNER", "ownerConnected"),
    ("TOKEN", "hasToken"),
    ("CREATED", "created"),
]


def _instances_table(instances: list[dict[str, Any]]) -> str:
    rows = [{**i, "created": when(i.get("createdAt"))} for i in instances]
    return table(rows, INSTANCE_COLUMNS)


@main.group()
def services() -> None:
    """List, inspect, enable, disable, remove, search, install and update services."""


@services.command("list")
@json_option
@pass_ctl
def services_list(ctl: Ctl) -> None:
    """Every service and whether it is enabled."""
    data = ctl.call("GET", "/_api/services")
    emit(ctl, data, lambda d: table(d["services"], SERVICE_COLUMNS))


@services.command("show")
@click.argument("name")
@json_option
@pass_ctl
def services_show(ctl: Ctl, name: str) -> None:
    """One service and its rooms."""
    data = ctl.call("GET", f"/_api/services/{_seg(name)}")
    emit(ctl, data, lambda d: pairs(d) + "\n\n" + _instances_table(d.get("instances", [])))


def _service_action(ctl: Ctl, method: str, path: str, done: str) -> None:
    data = ctl.call(method, path)
    emit(ctl, data, lambda d: done)


@services.command("enable")
@click.argument("name")
@json_option
@pass_ctl
def services_enable(ctl: Ctl, name: str) -> None:
    """Allow rooms of NAME to be created."""
    _service_action(ctl, "POST", f"/_api/services/{_seg(name)}/enable", f"enabled {name}")


@services.command("disable")
@click.argument("name")
@json_option
@pass_ctl
def services_disable(ctl: Ctl, name: str) -> None:
    """Refuse new rooms of NAME and close its open rooms."""
    _service_action(ctl, "POST", f"/_api/services/{_seg(name)}/disable", f"disabled {name}")


@services.command("remove")
@click.argument("name")
@json_option
@pass_ctl
def services_remove(ctl: Ctl, name: str) -> None:
    """Uninstall a marketplace service (built-ins cannot be removed)."""
    _service_action(ctl, "DELETE", f"/_api/services/{_seg(name)}", f"removed {name}")


MARKET_COLUMNS = [
    ("NAME", "name"),
    ("VERSION", "version"),
    ("INSTALLED", "installedVersion"),
    ("UPDATE", "updateAvailable"),
    ("AUTHOR", "author"),
    ("DESCRIPTION", "description"),
]


@services.command("search")
@click.argument("term", required=False, default="")
@json_option
@pass_ctl
def services_search(ctl: Ctl, term: str) -> None:
    """Services offered by the configured marketplaces (optionally matching TERM)."""
    data = ctl.call("POST", "/_api/marketplace/list", {})
    if term:
        needle = term.lower()
        data["services"] = [
            s
            for s in data.get("services", [])
            if needle
            in f"{s.get('name', '')} {s.get('displayName', '')} {s.get('description', '')}".lower()
        ]
    emit(ctl, data, lambda d: table(d.get("services", []), MARKET_COLUMNS))


@services.command("install")
@click.argument("name")
@click.option("--url", "market_url", help="Marketplace base URL (default: the configured ones).")
@json_option
@pass_ctl
def services_install(ctl: Ctl, name: str, market_url: str | None) -> None:
    """Install NAME from a marketplace (it starts disabled: `services enable NAME`)."""
    body: dict[str, Any] = {"name": name}
    if market_url:
        body["url"] = market_url
    data = ctl.call("POST", "/_api/marketplace/install", body)
    emit(ctl, data, lambda d: f"installed {name} {d.get('service', {}).get('version', '')}".strip())


@services.command("update")
@click.argument("name")
@json_option
@pass_ctl
def services_update(ctl: Ctl, name: str) -> None:
    """Update an installed marketplace service to its latest version."""
    data = ctl.call("POST", "/_api/marketplace/update", {"name": name})
    emit(ctl, data, lambda d: f"updated {name} {d.get('service', {}).get('version', '')}".strip())


# -- instances --------------------------------------------------------------------------------


@main.group()
def instances() -> None:
    """List, inspect and close rooms."""


@instances.command("list")
@click.option("--service", help="Only rooms of this service.")
@json_option
@pass_ctl
def instances_list(ctl: Ctl, service: str | None) -> None:
    """Open rooms, oldest first."""
    path = f"/_api/instances/{_seg(service)}" if service else "/_api/instances"
    data = ctl.call("GET", path)
    emit(ctl, data, lambda d: _instances_table(d["instances"]))


@instances.command("show")
@click.argument("uuid")
@json_option
@pass_ctl
def instances_show(ctl: Ctl, uuid: str) -> None:
    """One room and its members."""
    data = ctl.call("GET", f"/_api/instances/{_seg(uuid)}")

    def human(d: dict[str, Any]) -> str:
        info = pairs({**d, "createdAt": when(d.get("createdAt"))})
        return info + "\n\nmembers: " + (", ".join(d.get("members", [])) or "(none)")

    emit(ctl, data, human)


@instances.command("close")
@click.argument("uuid")
@json_option
@pass_ctl
def instances_close(ctl: Ctl, uuid: str) -> None:
    """Close a room: its owner and members get instance_destroyed."""
    data = ctl.call("DELETE", f"/_api/instances/{_seg(uuid)}")
    emit(ctl, data, lambda d: f"closed {uuid}")


# -- clients ----------------------------------------------------------------------------------


@main.group()
def clients() -> None:
    """List and kick room members."""


@clients.command("list")
@click.argument("service", required=False)
@json_option
@pass_ctl
def clients_list(ctl: Ctl, service: str | None) -> None:
    """Members of SERVICE's rooms (default: of every service)."""
    names = (
        [service] if service else [s["name"] for s in ctl.call("GET", "/_api/services")["services"]]
    )
    rows = []
    for name in names:
        for entry in ctl.call("GET", f"/{_seg(name)}/service/api/clients")["clients"]:
            rows.append({"service": name, **entry})
    columns = [
        ("SERVICE", "service"),
        ("USER", "userId"),
        ("ROOM", "instanceUuid"),
        ("NAME", "instanceName"),
    ]
    emit(ctl, {"clients": rows}, lambda d: table(d["clients"], columns))


@clients.command("kick")
@click.argument("service")
@click.argument("user_id")
@click.option("--instance", "instance_uuid", help="Only in this room.")
@json_option
@pass_ctl
def clients_kick(ctl: Ctl, service: str, user_id: str, instance_uuid: str | None) -> None:
    """Kick USER_ID from SERVICE's rooms: it gets `kick` and close code 4003."""
    body: dict[str, Any] = {"userId": user_id}
    if instance_uuid:
        body["instanceUuid"] = instance_uuid
    data = ctl.call("POST", f"/{_seg(service)}/service/api/kick", body)
    emit(ctl, data, lambda d: f"kicked {user_id} from {d.get('instanceUuid', service)}")


# -- tunnel -----------------------------------------------------------------------------------

TUNNEL_COLUMNS = [
    ("ID", "id"),
    ("CONNECTED", "connected"),
    ("LAST SEEN", "seen"),
    ("REQUESTS", "requests"),
    ("IN", "bytes_in"),
    ("OUT", "bytes_out"),
    ("CREATED", "created"),
]


@main.group()
def tunnel() -> None:
    """Register tunnel clients, and run an agent."""


@tunnel.command("list")
@json_option
@pass_ctl
def tunnel_list(ctl: Ctl) -> None:
    """Registered tunnel clients and their traffic."""
    data = ctl.call("GET", "/_api/tunnel/clients")
    rows = [
        {**c, "seen": when(c.get("last_seen")), "created": when(c.get("created_at"))}
        for c in data.get("clients", [])
    ]
    emit(ctl, data, lambda d: table(rows, TUNNEL_COLUMNS))


def _secret_text(d: dict[str, Any]) -> str:
    return (
        f"client id: {d['id']}\nsecret:    {d['secret']}\n"
        "The secret is shown only now; store it in a file for `wstunctl tunnel run --secret-file`."
    )


@tunnel.command("add")
@click.argument("client_id")
@json_option
@pass_ctl
def tunnel_add(ctl: Ctl, client_id: str) -> None:
    """Register CLIENT_ID; prints its secret once."""
    data = ctl.call("POST", "/_api/tunnel/clients", {"id": client_id})
    emit(ctl, data, _secret_text)


@tunnel.command("remove")
@click.argument("client_id")
@json_option
@pass_ctl
def tunnel_remove(ctl: Ctl, client_id: str) -> None:
    """Forget CLIENT_ID (its agent is disconnected)."""
    data = ctl.call("DELETE", f"/_api/tunnel/clients/{_seg(client_id)}")
    emit(ctl, data or {"success": True, "id": client_id}, lambda d: f"removed {client_id}")


@tunnel.command("rotate")
@click.argument("client_id")
@json_option
@pass_ctl
def tunnel_rotate(ctl: Ctl, client_id: str) -> None:
    """Give CLIENT_ID a new secret (the old one stops working); prints it once."""
    data = ctl.call("POST", f"/_api/tunnel/clients/{_seg(client_id)}/rotate")
    emit(ctl, data, _secret_text)


@tunnel.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def tunnel_run(ctx: click.Context) -> None:
    """Run a tunnel agent (the options of `python -m wstund.agent --help`)."""
    from ..agent import main as agent_main  # here: only `tunnel run` needs the agent's imports

    agent_main.main(args=list(ctx.args), prog_name="wstunctl tunnel run", standalone_mode=False)


# -- moosicbox --------------------------------------------------------------------------------

MOOSICBOX_COLUMNS = [
    ("ID", "id"),
    ("CONNECTED", "connected"),
    ("APPS", "app_sockets"),
    ("ACCESS", "access_tokens"),
    ("SIGNATURE", "signature_tokens"),
    ("MAGIC", "magic_tokens"),
    ("CREATED", "created"),
]


@main.group()
def moosicbox() -> None:
    """Register MoosicBox servers (clients of the MoosicBox-compatible tunnel)."""


@moosicbox.command("list")
@json_option
@pass_ctl
def moosicbox_list(ctl: Ctl) -> None:
    """Registered MoosicBox clients, whether their sender is connected, their live tokens."""
    data = ctl.call("GET", "/_api/moosicbox/clients")
    rows = [{**c, "created": when(c.get("created_at"))} for c in data.get("clients", [])]
    emit(ctl, data, lambda d: table(rows, MOOSICBOX_COLUMNS))


def _token_text(d: dict[str, Any]) -> str:
    return (
        f"client id:    {d['id']}\naccess token: {d['token']}\n"
        "The token is shown only now: it is the MoosicBox client's access token."
    )


@moosicbox.command("add")
@click.argument("client_id")
@json_option
@pass_ctl
def moosicbox_add(ctl: Ctl, client_id: str) -> None:
    """Register CLIENT_ID; prints its access token once."""
    data = ctl.call("POST", "/_api/moosicbox/clients", {"id": client_id})
    emit(ctl, data, _token_text)


@moosicbox.command("remove")
@click.argument("client_id")
@json_option
@pass_ctl
def moosicbox_remove(ctl: Ctl, client_id: str) -> None:
    """Forget CLIENT_ID and every token of it (its sender and apps are disconnected)."""
    data = ctl.call("DELETE", f"/_api/moosicbox/clients/{_seg(client_id)}")
    emit(ctl, data, lambda d: f"removed {client_id}")


@moosicbox.command("rotate")
@click.argument("client_id")
@json_option
@pass_ctl
def moosicbox_rotate(ctl: Ctl, client_id: str) -> None:
    """Replace every token of CLIENT_ID with one new access token; prints it once."""
    data = ctl.call("POST", f"/_api/moosicbox/clients/{_seg(client_id)}/rotate")
    emit(ctl, data, _token_text)

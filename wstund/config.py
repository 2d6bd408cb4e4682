"""wstund configuration: TOML validated with msgspec, every key defaulted.

The daemon runs with no file at all; ``etc/wstun/wstund.toml`` documents every key.
Unknown keys and wrong types are refused with the key's dotted path.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Literal

import msgspec

from .forwarded import parse_networks

DEFAULT_CONFIG_PATH = Path("/etc/wstun/wstund.toml")
SYSTEM_STATE_DIR = Path("/var/lib/wstun")
SYSTEM_RUNTIME_DIR = Path("/run/wstun")


class ConfigError(Exception):
    """The configuration cannot be used; ``errors`` lists one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    bind: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:8080"])
    public_url: str = ""
    token: str = ""
    token_file: str = ""
    admin_token: str = ""
    admin_token_file: str = ""
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    max_connections: int = 10_000
    max_connections_per_ip: int = 256
    head_timeout: float = 5.0
    keep_alive_timeout: float = 5.0
    state_dir: str = ""
    shutdown_grace: float = 5.0
    drain_delay: float = 0.0
    send_timeout: float = 30.0


class AdminConfig(_Section):
    socket: str = ""
    mode: str = "0660"
    group: str = ""
    login_max_age: int = 7 * 24 * 3600
    host: str = ""


class RelayConfig(_Section):
    max_message_size: int = 1024 * 1024
    max_rooms_per_connection: int = 16
    max_members_per_room: int = 1000
    outbox_size: int = 256
    inbox_size: int = 1024
    slow_consumer_timeout: float = 5.0
    max_queued_bytes: int = 16 * 1024 * 1024
    max_inbox_bytes: int = 16 * 1024 * 1024
    member_messages_per_second: float = 1000.0
    member_bytes_per_second: int = 8 * 1024 * 1024
    member_rate_burst: float = 2.0
    max_rate_limited: int = 20
    write_batch_bytes: int = 64 * 1024
    permessage_deflate: bool = False
    send_buffer: int = 128 * 1024
    heartbeat_interval: float = 20.0
    idle_timeout: float = 60.0
    owner_grace: float = 10.0
    max_invalid_messages: int = 10
    failed_joins_per_minute: int = 10


class HttpRelayConfig(_Section):
    start_timeout: float = 10.0
    chunk_timeout: float = 30.0
    window: int = 1024 * 1024
    channel_size: int = 32
    max_request_body: int = 512 * 1024


class TunnelConfig(_Section):
    host_suffix: str = ""
    request_timeout: float = 30.0
    max_buffered_bytes: int = 16 * 1024 * 1024
    replace_existing: bool = False
    buffered_clients: list[str] = msgspec.field(default_factory=list)
    auth_failures_per_minute: int = 10
    window_size: int = 1024 * 1024
    max_frame_size: int = 256 * 1024
    max_streams_per_client: int = 256
    ping_interval: float = 20.0
    idle_timeout: float = 60.0
    stats_flush_interval: float = 5.0
    max_requests_per_address: int = 32
    body_timeout: float = 15.0


class MoosicBoxConfig(_Section):
    enabled: bool = True
    request_timeout: float = 30.0
    max_request_body: int = 256 * 1024
    max_frame_size: int = 64 * 1024
    max_pending_bytes: int = 16 * 1024 * 1024
    stall_timeout: float = 4.0
    max_buffered_bytes: int = 16 * 1024 * 1024
    buffered_clients: list[str] = msgspec.field(default_factory=list)
    max_requests_per_client: int = 256
    max_app_sockets_per_client: int = 64
    app_outbox_size: int = 256
    reply_routes_per_client: int = 1024
    max_tokens_per_client: int = 1000
    ping_interval: float = 5.0
    idle_timeout: float = 10.0


class MarketplaceConfig(_Section):
    urls: list[str] = msgspec.field(default_factory=list)
    timeout: float = 10.0
    max_redirects: int = 3
    allow_private_addresses: bool = False
    trusted_services: list[str] = msgspec.field(default_factory=list)
    max_file_size: int = 5 * 1024 * 1024
    max_service_size: int = 20 * 1024 * 1024
    max_files: int = 64
    install_timeout: float = 120.0


class ClusterConfig(_Section):
    redis_url: str = ""
    redis_password: str = ""
    redis_password_file: str = ""
    node_id: str = ""
    advertise_url: str = ""
    node_ttl: float = 15.0
    secret: str = ""
    secret_file: str = ""
    request_timeout: float = 5.0
    max_pending_bytes: int = 64 * 1024 * 1024


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["plain", "json"] = "plain"


class MetricsConfig(_Section):
    enabled: bool = True
    token: str = ""
    token_file: str = ""
    bind: str = ""


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    relay: RelayConfig = msgspec.field(default_factory=RelayConfig)
    http_relay: HttpRelayConfig = msgspec.field(default_factory=HttpRelayConfig)
    tunnel: TunnelConfig = msgspec.field(default_factory=TunnelConfig)
    moosicbox: MoosicBoxConfig = msgspec.field(default_factory=MoosicBoxConfig)
    marketplace: MarketplaceConfig = msgspec.field(default_factory=MarketplaceConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)


_POSITIVE_INTS = {
    "relay.max_message_size",
    "relay.max_rooms_per_connection",
    "relay.max_members_per_room",
    "relay.outbox_size",
    "relay.inbox_size",
    "relay.max_queued_bytes",
    "relay.max_inbox_bytes",
    "relay.max_rate_limited",
    "relay.max_invalid_messages",
    "relay.failed_joins_per_minute",
    "server.max_connections",
    "server.max_connections_per_ip",
    "tunnel.max_buffered_bytes",
    "marketplace.max_file_size",
    "marketplace.max_service_size",
    "marketplace.max_files",
    "http_relay.window",
    "cluster.node_ttl",
    "cluster.request_timeout",
    "cluster.max_pending_bytes",
    "http_relay.channel_size",
    "http_relay.max_request_body",
    "tunnel.window_size",
    "tunnel.max_frame_size",
    "tunnel.max_streams_per_client",
    "moosicbox.max_request_body",
    "moosicbox.max_frame_size",
    "moosicbox.max_pending_bytes",
    "moosicbox.max_buffered_bytes",
    "moosicbox.max_requests_per_client",
    "moosicbox.max_app_sockets_per_client",
    "moosicbox.app_outbox_size",
    "moosicbox.reply_routes_per_client",
    "moosicbox.max_tokens_per_client",
    "tunnel.max_requests_per_address",
    "tunnel.auth_failures_per_minute",
}
_NON_NEGATIVE = {
    "relay.write_batch_bytes",
    "relay.send_buffer",
    "relay.slow_consumer_timeout",
    "relay.heartbeat_interval",
    "relay.idle_timeout",
    "relay.owner_grace",
    "relay.member_messages_per_second",
    "relay.member_bytes_per_second",
    "server.shutdown_grace",
    "server.drain_delay",
    "server.head_timeout",
    "server.send_timeout",
    "tunnel.request_timeout",
    "marketplace.timeout",
    "marketplace.install_timeout",
    "marketplace.max_redirects",
    "http_relay.start_timeout",
    "http_relay.chunk_timeout",
    "tunnel.ping_interval",
    "tunnel.idle_timeout",
    "tunnel.stats_flush_interval",
    "moosicbox.request_timeout",
    "moosicbox.stall_timeout",
    "moosicbox.ping_interval",
    "moosicbox.idle_timeout",
    "admin.login_max_age",
    "tunnel.body_timeout",
}
_LOOPBACK_BIND_RE = re.compile(r"^(127(\.\d{1,3}){3}|\[::1\]|localhost):\d+$")
_BIND_RE = re.compile(r"^(unix:.+|fd://\d+|\[[0-9a-fA-F:.]+\]:\d+|[^:\s]+:\d+)$")


def _lookup(config: Config, dotted: str) -> object:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def _dotted(msgspec_path: str) -> str:
    """Turn msgspec's ``$.relay.max_members`` into ``relay.max_members``."""
    return msgspec_path.removeprefix("$").removeprefix(".") or "(top level)"


def _read_secret(path: str, key: str, errors: list[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        errors.append(f"{key}: cannot read {path}: {exc.strerror}")
        return ""


def bind_problems(binds: list[str]) -> list[str]:
    """One line per unusable ``server.bind`` address (none: they are all well-formed)."""
    if not binds:
        return ["server.bind: expected at least one address"]
    return [
        f"server.bind: {addr!r} is not HOST:PORT, [V6]:PORT, unix:PATH or fd://N"
        for addr in binds
        if not _BIND_RE.match(addr)
    ]


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _check_cluster(cluster: ClusterConfig, errors: list[str]) -> None:
    """Check [cluster] and read its secret files (nothing is needed when redis_url is empty)."""
    for name in ("redis_password", "secret"):
        inline, path = getattr(cluster, name), getattr(cluster, f"{name}_file")
        if inline and path:
            errors.append(f"cluster.{name}_file: set either cluster.{name} or cluster.{name}_file")
        elif path:
            setattr(cluster, name, _read_secret(path, f"cluster.{name}_file", errors))
    if cluster.secret and len(cluster.secret) < 16:
        errors.append("cluster.secret: use at least 16 characters")
    if not cluster.redis_url:
        return
    if not cluster.redis_url.startswith(_REDIS_SCHEMES):
        errors.append(
            f"cluster.redis_url: expected redis://, rediss:// or unix://, got {cluster.redis_url!r}"
        )
    if cluster.node_id and not _NODE_ID_RE.fullmatch(cluster.node_id):
        errors.append("cluster.node_id: 1 to 64 characters of A-Z a-z 0-9 _ . -")
    if cluster.advertise_url and not re.match(r"^https?://", cluster.advertise_url):
        errors.append(f"cluster.advertise_url: {cluster.advertise_url!r} is not an http(s) URL")


def validate(config: Config) -> Config:
    """Check ranges and read secret files; raise ConfigError listing every problem."""
    errors: list[str] = []
    for key in sorted(_POSITIVE_INTS):
        if _lookup(config, key) <= 0:  # type: ignore[operator]
            errors.append(f"{key}: expected a positive integer, got {_lookup(config, key)}")
    for key in sorted(_NON_NEGATIVE):
        if _lookup(config, key) < 0:  # type: ignore[operator]
            errors.append(f"{key}: expected a number >= 0, got {_lookup(config, key)}")
    errors.extend(parse_networks(config.server.trusted_proxies)[1])
    if config.server.keep_alive_timeout <= 0:
        errors.append(
            "server.keep_alive_timeout: expected seconds > 0, got "
            f"{config.server.keep_alive_timeout}"
        )
    if config.relay.member_rate_burst <= 0:
        errors.append(
            f"relay.member_rate_burst: expected seconds > 0, got {config.relay.member_rate_burst}"
        )
    errors.extend(bind_problems(config.server.bind))
    for url in config.marketplace.urls:
        if not re.match(r"https?://[^/\s]+", url):
            errors.append(f"marketplace.urls: {url!r} is not an http(s) URL")
    if not re.fullmatch(r"0?[0-7]{3}", config.admin.mode):
        errors.append(f"admin.mode: expected an octal mode like '0660', got {config.admin.mode!r}")
    if config.metrics.bind and not _LOOPBACK_BIND_RE.match(config.metrics.bind):
        errors.append(
            f"metrics.bind: {config.metrics.bind!r} is not a loopback HOST:PORT "
            "(127.x.x.x:PORT, [::1]:PORT or localhost:PORT)"
        )
    if config.metrics.token and config.metrics.token_file:
        errors.append("metrics.token_file: set either metrics.token or metrics.token_file")
    elif config.metrics.token_file:
        config.metrics.token = _read_secret(config.metrics.token_file, "metrics.token_file", errors)
    _check_cluster(config.cluster, errors)
    for name in ("token", "admin_token"):
        inline = getattr(config.server, name)
        path = getattr(config.server, f"{name}_file")
        if inline and path:
            errors.append(f"server.{name}_file: set either server.{name} or server.{name}_file")
        elif path:
            setattr(config.server, name, _read_secret(path, f"server.{name}_file", errors))
    if errors:
        raise ConfigError(errors)
    return config


def parse(text: str, source: str = "") -> Config:
    """Parse and validate TOML text into a Config; ConfigError lists every problem at once.

    ``source`` (the file's path) names the file in a TOML syntax error, which gives its line.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = f" in {source}" if source else ""
        raise ConfigError([f"invalid TOML{where}: {exc}"]) from None
    errors: list[str] = []
    usable = _check_tables(data, errors)
    try:
        config = msgspec.convert(usable, Config)
    except msgspec.ValidationError as exc:  # not expected after _check_tables; still one line
        raise ConfigError([*errors, _format_validation_error(str(exc))]) from None
    try:
        validate(config)
    except ConfigError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    return config


def _suggest(name: str, known: list[str], prefix: str = "") -> str:
    """`` (did you mean prefix.x?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _field_problem(value: object, kind: object) -> str | None:
    """Why ``value`` is not a ``kind``, in words (allowed values for enums), or None."""
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        if typing.get_origin(kind) is Literal:
            allowed = ", ".join(repr(v) for v in typing.get_args(kind))
            return f"expected one of {allowed}, got {value!r}"
        return str(exc)
    return None


def _check_tables(data: dict[str, object], errors: list[str]) -> dict[str, object]:
    """Check every table and key of ``data`` against Config; collect one line per problem
    and return the part that is usable, so that range checks can run on it too."""
    sections = {f.name: f.type for f in msgspec.structs.fields(Config)}
    usable: dict[str, object] = {}
    for name, table in data.items():
        kind = sections.get(name)
        if kind is None:
            errors.append(f"{name}: unknown key{_suggest(name, list(sections))}")
            continue
        if not isinstance(table, dict):
            errors.append(f"{name}: expected a table [{name}], got {table!r}")
            continue
        keys = {f.name: f.type for f in msgspec.structs.fields(kind)}
        good: dict[str, object] = {}
        for key, value in table.items():
            if key not in keys:
                errors.append(f"{name}.{key}: unknown key{_suggest(key, list(keys), name + '.')}")
                continue
            problem = _field_problem(value, keys[key])
            if problem is None:
                good[key] = value
            else:
                errors.append(f"{name}.{key}: {problem}")
        usable[name] = good
    return usable


def _format_validation_error(message: str) -> str:
    """Rewrite msgspec's ``Expected `int`, got `str` - at `$.relay.x``` as ``relay.x: ...``."""
    unknown = re.match(r"^Object contains unknown field `([^`]*)`(?: - at `([^`]*)`)?$", message)
    if unknown:
        field, path = unknown.groups()
        where = _dotted(path or "$")
        return f"{field if where == '(top level)' else where + '.' + field}: unknown key"
    located = re.match(r"^(.*) - at `([^`]*)`$", message)
    if located:
        detail, path = located.groups()
        return f"{_dotted(path)}: {detail}"
    return message


def load(path: Path | None) -> Config:
    """Load the config from ``path`` (None: the default path if it exists, else defaults)."""
    explicit = path is not None
    path = path or Path(os.environ.get("WSTUND_CONFIG", "") or DEFAULT_CONFIG_PATH)
    explicit = explicit or bool(os.environ.get("WSTUND_CONFIG"))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError([f"config file not found: {path}"]) from None
        return validate(Config())
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc.strerror}"]) from None
    return parse(text, str(path))


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def state_dir(config: Config) -> Path:
    """Where state lives: the configured dir, $STATE_DIRECTORY, /var/lib/wstun, or a user path."""
    candidates: list[Path] = []
    if config.server.state_dir:
        candidates.append(Path(config.server.state_dir))
    elif os.environ.get("STATE_DIRECTORY"):
        candidates.append(Path(os.environ["STATE_DIRECTORY"].split(":")[0]))
    else:
        candidates.append(SYSTEM_STATE_DIR)
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        candidates.append(Path(xdg) / "wstun")
    for candidate in candidates:
        if _writable_dir(candidate):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError([f"server.state_dir: {tried}: not a writable directory"])


def runtime_dir() -> Path:
    """Where the admin socket lives: $RUNTIME_DIRECTORY, /run/wstun, or a user runtime path."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if _writable_dir(SYSTEM_RUNTIME_DIR):
        return SYSTEM_RUNTIME_DIR
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/wstun-{os.getuid()}"
    return Path(base) / "wstun"

"""wstund configuration: TOML validated with msgspec, every key defaulted.

The daemon runs with no file at all; ``etc/wstun/wstund.toml`` documents every key.
Unknown keys and wrong types are refused with the key's dotted path.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

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
    max_connections: int = 10_000
    max_connections_per_ip: int = 256
    state_dir: str = ""
    shutdown_grace: float = 5.0
    send_timeout: float = 30.0


class AdminConfig(_Section):
    socket: str = ""
    mode: str = "0660"
    group: str = ""


class RelayConfig(_Section):
    max_message_size: int = 1024 * 1024
    max_rooms_per_connection: int = 16
    max_members_per_room: int = 1000
    outbox_size: int = 256
    inbox_size: int = 1024
    slow_consumer_timeout: float = 5.0
    max_queued_bytes: int = 16 * 1024 * 1024
    write_batch_bytes: int = 64 * 1024
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
    window_size: int = 256 * 1024
    max_frame_size: int = 64 * 1024
    max_streams_per_client: int = 256
    ping_interval: float = 20.0
    idle_timeout: float = 60.0
    stats_flush_interval: float = 5.0


class MarketplaceConfig(_Section):
    urls: list[str] = msgspec.field(default_factory=list)
    timeout: float = 10.0
    max_redirects: int = 3
    max_file_size: int = 5 * 1024 * 1024
    max_service_size: int = 20 * 1024 * 1024
    max_files: int = 64


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


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    relay: RelayConfig = msgspec.field(default_factory=RelayConfig)
    http_relay: HttpRelayConfig = msgspec.field(default_factory=HttpRelayConfig)
    tunnel: TunnelConfig = msgspec.field(default_factory=TunnelConfig)
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
}
_NON_NEGATIVE = {
    "relay.write_batch_bytes",
    "relay.slow_consumer_timeout",
    "relay.heartbeat_interval",
    "relay.idle_timeout",
    "relay.owner_grace",
    "server.shutdown_grace",
    "server.send_timeout",
    "tunnel.request_timeout",
    "marketplace.timeout",
    "marketplace.max_redirects",
    "http_relay.start_timeout",
    "http_relay.chunk_timeout",
    "tunnel.ping_interval",
    "tunnel.idle_timeout",
    "tunnel.stats_flush_interval",
}
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
    if not config.server.bind:
        errors.append("server.bind: expected at least one address")
    for addr in config.server.bind:
        if not _BIND_RE.match(addr):
            errors.append(f"server.bind: {addr!r} is not HOST:PORT, [V6]:PORT, unix:PATH or fd://N")
    for url in config.marketplace.urls:
        if not re.match(r"https?://[^/\s]+", url):
            errors.append(f"marketplace.urls: {url!r} is not an http(s) URL")
    if not re.fullmatch(r"0?[0-7]{3}", config.admin.mode):
        errors.append(f"admin.mode: expected an octal mode like '0660', got {config.admin.mode!r}")
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


def parse(text: str) -> Config:
    """Parse and validate TOML text into a Config."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"]) from None
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError([_format_validation_error(str(exc))]) from None
    return validate(config)


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
    return parse(text)


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
    raise ConfigError([f"server.state_dir: no writable state directory among {candidates}"])


def runtime_dir() -> Path:
    """Where the admin socket lives: $RUNTIME_DIRECTORY, /run/wstun, or a user runtime path."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if _writable_dir(SYSTEM_RUNTIME_DIR):
        return SYSTEM_RUNTIME_DIR
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/wstun-{os.getuid()}"
    return Path(base) / "wstun"

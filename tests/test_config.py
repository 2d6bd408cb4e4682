"""Config parsing: defaults, the shipped example, and refusals with dotted paths."""

from pathlib import Path

import pytest

from wstund.config import Config, ConfigError, parse

EXAMPLE = Path(__file__).parent.parent / "etc" / "wstun" / "wstund.toml"


def test_example_file_documents_every_default() -> None:
    assert parse(EXAMPLE.read_text()) == parse("") == Config()


def test_example_file_names_every_key() -> None:
    text = EXAMPLE.read_text()
    for section in Config.__struct_fields__:
        assert f"[{section}]" in text
        for key in getattr(Config(), section).__struct_fields__:
            assert f"\n{key} = " in text, f"{section}.{key} is not documented"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[relay]\nmax_members_per_room = 'x'", "relay.max_members_per_room: Expected `int`"),
        ("[relay]\nbogus = 1", "relay.bogus: unknown key"),
        ("bogus = 1", "bogus: unknown key"),
        ("[server]\nbind = ['nope']", "server.bind: 'nope' is not HOST:PORT"),
        ("[relay]\nowner_grace = -1", "relay.owner_grace: expected a number >= 0"),
        ("[relay]\noutbox_size = 0", "relay.outbox_size: expected a positive integer"),
        ("[server]\nkeep_alive_timeout = 0", "server.keep_alive_timeout: expected seconds > 0"),
        (
            "[log]\nlevel = 'loud'",
            "log.level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'",
        ),
        ("[server\n", "invalid TOML"),
        ("[cluster]\nredis_url = 'http://127.0.0.1'", "cluster.redis_url: expected redis://"),
        ("[cluster]\nredis_url = 'redis://h'\nnode_id = 'a b'", "cluster.node_id: 1 to 64"),
        ("[cluster]\nsecret = 'short'", "cluster.secret: use at least 16"),
        ("[cluster]\nsecret = 'x'\nsecret_file = '/x'", "cluster.secret_file: set either"),
        ("[cluster]\nnode_ttl = 0", "cluster.node_ttl: expected a positive"),
    ],
)
def test_refusals_name_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert any(line.startswith(error) for line in info.value.errors), info.value.errors


def test_secrets_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "server.token").write_text("s3cret\n")
    config = parse(f"[server]\ntoken_file = '{tmp_path / 'server.token'}'")
    assert config.server.token == "s3cret"
    with pytest.raises(ConfigError, match="server.admin_token_file: cannot read"):
        parse(f"[server]\nadmin_token_file = '{tmp_path / 'missing'}'")
    with pytest.raises(ConfigError, match="set either"):
        parse(f"[server]\ntoken = 'a'\ntoken_file = '{tmp_path / 'server.token'}'")

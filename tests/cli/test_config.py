"""setec-serve's flags as a checked configuration: --listen parsing (HOST:PORT, IPv6 only
in brackets, clear errors naming the value), the facts the authorizer is given, the
backup flags, and messages that list what the installed plugins provide."""

from __future__ import annotations

from typing import Any

import pytest

from setec_cli.config import DEFAULT_LISTEN, backup_uri, parse_listen, resolve
from setec_core import Plugins
from setec_core.errors import ConfigError
from setec_core.server_info import ServerInfo


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    """The installed plugins."""
    return Plugins.load()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8443", ("::1", 8443)),
        ("[fd7a:115c:a1e0::1]:443", ("fd7a:115c:a1e0::1", 443)),
    ],
)
def test_valid_listen_addresses(value: str, expected: tuple[str, int]) -> None:
    """HOST:PORT and [V6]:PORT split into host (without brackets) and port."""
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    ["nonsense", "127.0.0.1:", "::1:8080", "[::1]", "[]:8080"],
)
def test_invalid_listen_addresses_name_the_value(value: str) -> None:
    """Anything else is a ConfigError that quotes the value (and IPv6 needs brackets)."""
    with pytest.raises(ConfigError, match=r"is not HOST:PORT") as info:
        parse_listen(value)
    assert repr(value) in str(info.value)


def test_the_default_listen_is_the_server_facts_default() -> None:
    """One default listen address: setec-serve's is the one authorizers assume."""
    assert DEFAULT_LISTEN == ServerInfo().listen == "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("options", "server"),
    [
        ({"dev": True}, ServerInfo("127.0.0.1", 8080, dev=True)),
        ({"dev": True, "listen": "[::1]:0"}, ServerInfo("::1", 0, dev=True)),
        (
            {"dev": True, "listen": "unix:/tmp"},
            ServerInfo("localhost", 0, unix_socket="/tmp", dev=True),
        ),
        (
            {"state_dir": "s", "kms_key_name": "dev://", "listen": "10.1.2.3:443"},
            ServerInfo("10.1.2.3", 443),
        ),
    ],
    ids=["dev default", "ipv6", "unix socket", "network"],
)
def test_the_authorizer_is_told_the_parsed_listen_address(
    plugins: Plugins, options: dict[str, Any], server: ServerInfo
) -> None:
    """--listen is parsed once, here; the authorizer gets host, port, socket and mode."""
    assert resolve(options, plugins).server == server


def test_plugin_options_are_kept_for_the_plugins(plugins: Plugins) -> None:
    """The values of every plugin's options are kept by their dest, for the plugins;
    the server's own flags are not among them."""
    options = {"dev": True, "policy_file": "p.json", "insecure_http": True, "listen": None}
    kept = resolve(options, plugins).plugin_options
    assert kept["policy_file"] == "p.json"
    assert kept["insecure_http"] is True
    assert kept["backup_region"] is None
    assert "listen" not in kept
    assert "dev" not in kept


def test_a_missing_key_lists_the_installed_providers(plugins: Plugins) -> None:
    """Without --kms-key-name (and --dev), the message lists the registered schemes and
    the bare ARN form the AWS KMS provider owns."""
    with pytest.raises(ConfigError) as info:
        resolve({"state_dir": "s"}, plugins)
    message = str(info.value)
    assert message.startswith("--kms-key-name (or SETEC_KMS_KEY_NAME) must be given")
    # Every installed provider's scheme, sorted (more are installed as plugins land).
    schemes = plugins.key_providers.schemes()
    assert {"aws-kms", "dev", "gcp-kms", "vault-transit"} <= set(schemes)
    listed = ", ".join(f"{scheme}://..." for scheme in schemes)
    assert f"({listed}; or a bare arn:... " in message


@pytest.mark.parametrize(
    ("options", "uri"),
    [
        ({}, None),
        ({"backup": "dir:///b"}, "dir:///b"),
        ({"backup_bucket": "acme"}, "s3://acme"),
        ({"backup_bucket": "acme", "backup_region": "eu-west-1"}, "s3://acme"),
        ({"backup": "s3://acme/p", "backup_role": "arn:aws:iam::1:role/r"}, "s3://acme/p"),
    ],
)
def test_backup_uri(plugins: Plugins, options: dict[str, Any], uri: str | None) -> None:
    """--backup, or Go's --backup-bucket B for s3://B; the s3 sink's own options stay
    out of the URI (the sink is given them)."""
    assert backup_uri(options, plugins) == uri


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"backup": "s3://a", "backup_bucket": "b"},
            "--backup 's3://a' and --backup-bucket 'b' both name where backups go; give one",
        ),
        ({"backup_bucket": "b/p"}, "--backup-bucket 'b/p' is not a bucket name"),
        (
            {"backup_region": "eu-west-1"},
            "--backup-region need --backup (or --backup-bucket) to say where backups go",
        ),
        ({"backup_keep": 3}, "--backup-keep need --backup (or --backup-bucket)"),
        (
            {"backup": "dir:///b", "backup_role": "arn:aws:iam::1:role/r"},
            "--backup-region and --backup-role apply to s3:// backups, not 'dir:///b'",
        ),
    ],
)
def test_backup_flags_that_do_not_go_together(
    plugins: Plugins, options: dict[str, Any], message: str
) -> None:
    """A sink's option without --backup, or with another sink's URI, is an error naming
    the flags; so are two places for backups."""
    with pytest.raises(ConfigError) as info:
        backup_uri(options, plugins)
    assert message in str(info.value)


def test_the_s3_flags_reach_the_sink(plugins: Plugins) -> None:
    """--backup-region and --backup-role become the s3 sink's region and role (its URI
    says so); given twice, in the URI and by flag, they are refused."""
    pytest.importorskip("boto3")
    role = "arn:aws:iam::123456789012:role/setec-backup"
    configured = plugins.with_options({"backup_region": "eu-west-1", "backup_role": role})
    sink = configured.backup_sink("s3://acme/prefix")
    try:
        assert sink.uri == f"s3://acme/prefix?region=eu-west-1&role={role}"
    finally:
        sink.close()
    with pytest.raises(ConfigError, match="gives region= and --backup-region gives it too"):
        configured.backup_sink("s3://acme?region=us-east-1")

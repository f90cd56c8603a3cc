"""Option declarations and the server facts an authorizer is given (setec_core.options,
docs/plugins.md "Plugin options")."""

from __future__ import annotations

from pathlib import Path

import pytest

from setec_core import PluginError
from setec_core.options import Option
from setec_core.server_info import DEFAULT_SERVER, ServerInfo


def test_an_option_derives_its_names_from_its_flag() -> None:
    """The value's name, the variable and the aliases' variables come from the flags."""
    option = Option("--backup-region", "Region.", aliases=("--backup-bucket-region",))
    assert option.flags == ("--backup-region", "--backup-bucket-region")
    assert option.dest == "backup_region"
    assert option.envvar == "SETEC_BACKUP_REGION"
    assert option.envvars == ("SETEC_BACKUP_REGION", "SETEC_BACKUP_BUCKET_REGION")


@pytest.mark.parametrize(
    ("option", "value_name", "default"),
    [
        (Option("--a", "A."), "TEXT", None),
        (Option("--a", "A.", type=int, default=3), "N", 3),
        (Option("--a", "A.", type=float), "NUMBER", None),
        (Option("--a", "A.", type=Path), "PATH", None),
        (Option("--a", "A.", type=bool, default=False), "", False),
        (Option("--a", "A.", metavar="ARN"), "ARN", None),
        (Option("--a", "A.", multiple=True), "TEXT", ()),
    ],
)
def test_value_names_and_defaults(option: Option, value_name: str, default: object) -> None:
    """Each type has a value name for --help; a repeatable option defaults to ()."""
    assert option.value_name == value_name
    assert option.default == default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flag": "policy-file"}, "is not of the form --lower-case-words"),
        ({"flag": "--Policy"}, "is not of the form"),
        ({"flag": "--policy_file"}, "is not of the form"),
        ({"flag": "--a", "aliases": ("-a",)}, "'-a' is not of the form"),
        ({"flag": "--a", "type": list}, "has type"),
        ({"flag": "--a", "type": bool, "multiple": True}, "cannot be multiple"),
    ],
)
def test_a_malformed_option_is_refused(kwargs: dict[str, object], message: str) -> None:
    """A flag setec-serve could not offer, or a type it cannot parse, is a PluginError."""
    with pytest.raises(PluginError, match=message):
        Option(help="A.", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("server", "listen", "local"),
    [
        (ServerInfo(), "127.0.0.1:8080", True),
        (ServerInfo("::1", 9), "[::1]:9", True),
        (ServerInfo("localhost", 0), "localhost:0", True),
        (ServerInfo("10.0.0.1", 443), "10.0.0.1:443", False),
        (ServerInfo("setec.example.com", 443), "setec.example.com:443", False),
        (ServerInfo(unix_socket="/run/setec.sock"), "unix:/run/setec.sock", True),
        (ServerInfo(unix_socket=""), "unix:", False),
    ],
)
def test_server_facts(server: ServerInfo, listen: str, local: bool) -> None:
    """The listen address as --listen spells it, and whether only this machine can
    reach it (loopback or a unix socket)."""
    assert server.listen == listen
    assert server.is_local is local


def test_the_default_server_is_setec_serves_default() -> None:
    """An authorizer built without server facts assumes setec-serve's defaults."""
    assert ServerInfo("127.0.0.1", 8080, None, tls=False, dev=False) == DEFAULT_SERVER

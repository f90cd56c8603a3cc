"""What ``setec`` imports at start-up: a client command loads the client and nothing of
the server (docs/performance.md, "CLI start-up").

These tests are structural, not timed, so that the gain cannot silently regress: each
runs the real entry point in a fresh interpreter and lists the modules it loaded.
bench/cli_startup.py measures what the difference is worth.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from console_scripts import clean_env, run_setec

from setec_core.testing import SUPERUSER
from setec_core.testing.server import LocalServer

#: What only the server side needs: its HTTP framework, the cryptography and storage of
#: the database, cloud SDKs, the plugin machinery and the plugins.
SERVER_SIDE = (
    "werkzeug",
    "cryptography",
    "psycopg",
    "psycopg_pool",
    "boto3",
    "botocore",
    "sqlite3",
    "pluggy",
    "setec_plugins",
    "setec_cli.serve",
    "setec_cli.admin",
    "setec_core.database",
    "setec_core.audit",
    "setec_core.crypto",
    "setec_core.storage",
    "setec_core.plugins",
    "setec_core.http",
    "setec_core.builtin",
)

# Runs setec's entry point with the given arguments and writes the names of the loaded
# modules to the file named first, when the process exits (click ends with sys.exit).
RUN_MAIN = """
import atexit, sys
out = sys.argv.pop(1)
def write():
    with open(out, "w") as f:
        f.write(" ".join(sorted(sys.modules)))
atexit.register(write)
sys.argv[0] = "setec"
from setec_cli.setec import main
main()
"""


def run_main(
    args: list[str], tmp_path_factory: pytest.TempPathFactory, **env: str
) -> tuple[set[str], str]:
    """Run ``setec ARGS`` (given a value on stdin), which must succeed; return the
    modules it had loaded when it exited, and its output."""
    out = tmp_path_factory.mktemp("modules") / "loaded"
    proc = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, str(out), *args],
        input=b"value",
        capture_output=True,
        env=clean_env(**env),
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return set(out.read_text().split()), proc.stdout.decode()


def loaded_by(args: list[str], tmp_path_factory: pytest.TempPathFactory, **env: str) -> set[str]:
    """The modules a ``setec ARGS`` process had loaded when it exited."""
    return run_main(args, tmp_path_factory, **env)[0]


def server_side(modules: set[str]) -> list[str]:
    """The modules of ``modules`` that belong to :data:`SERVER_SIDE`."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in SERVER_SIDE))


def test_import_loads_no_server_side() -> None:
    """Importing the setec command loads none of the server side (the server command is
    imported only when it is used)."""
    code = "import sys, setec_cli.setec; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert server_side(set(out.stdout.split())) == []


@pytest.mark.parametrize(
    "args",
    [
        ["get", "startup/a"],
        ["list"],
        ["info", "startup/a"],
        ["put", "startup/a"],
        ["version"],
        ["--version"],
    ],
)
def test_client_commands_load_no_server_side(
    server: LocalServer, tmp_path_factory: pytest.TempPathFactory, args: list[str]
) -> None:
    """A client command run to the end against a real server loads the client and none
    of the server side: no werkzeug, cryptography, database, storage or plugins."""
    server.db.put(SUPERUSER, "startup/a", b"value")
    loaded = loaded_by(args, tmp_path_factory, SETEC_SERVER=server.url)
    if args[0] not in ("version", "--version"):
        assert "setec_core.client.api" in loaded  # the command did run
    assert server_side(loaded) == []


def test_help_lists_server_without_importing_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``setec --help`` loads the plugins (a plugin may add a command) but not the
    server command, whose short help it lists from the stand-in."""
    loaded = loaded_by(["--help"], tmp_path_factory)
    assert "setec_core.plugins" in loaded
    assert "setec_cli.serve" not in loaded
    assert "werkzeug" not in loaded


def test_completing_a_command_name_does_not_import_the_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Shell completion of ``setec <TAB>`` offers "server" without importing it; that of
    ``setec server <TAB>`` imports it, with the commands plugins add."""
    bash = {"_SETEC_COMPLETE": "bash_complete"}
    loaded, out = run_main([], tmp_path_factory, **bash, COMP_WORDS="setec ", COMP_CWORD="1")
    assert "plain,server" in out.split()
    assert "setec_cli.serve" not in loaded
    loaded, out = run_main([], tmp_path_factory, **bash, COMP_WORDS="setec server ", COMP_CWORD="2")
    assert "plain,new-token" in out.split()
    assert "setec_cli.serve" in loaded


def test_help_listing_is_the_same_once_the_server_is_loaded() -> None:
    """The stand-in's line in ``setec --help`` is the real server command's, at any
    terminal width: loading the server changes nothing in the listing."""
    from setec_cli.setec import LazyCommand, cli

    widths = (60, 80, 120)

    def listing(width: int) -> str:
        result = CliRunner().invoke(cli, ["--help"], terminal_width=width)
        assert result.exit_code == 0, result.output
        return result.output

    if not isinstance(cli.commands["server"], LazyCommand):
        pytest.skip("the server command was loaded by another test of this process")
    before = [listing(w) for w in widths]
    with cli.make_context("setec", ["server"]) as ctx:
        assert cli.get_command(ctx, "server") is not None
    assert not isinstance(cli.commands["server"], LazyCommand)
    assert next(iter(cli.commands)) == "server"  # keeps its place
    assert [listing(w) for w in widths] == before


def test_plugins_add_their_commands_to_the_server_command() -> None:
    """``setec help server`` lists what plugins add to the server once it is loaded
    (the policy authorizer's new-token), as ``setec-serve --help`` does."""
    proc = run_setec("help", "server")
    assert proc.returncode == 0, proc.stderr
    assert b"new-token" in proc.stdout
    proc = run_setec("server", "new-token", "--help")
    assert proc.returncode == 0, proc.stderr
    assert b"Make a bearer token" in proc.stdout

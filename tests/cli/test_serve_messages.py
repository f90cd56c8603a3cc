"""What ``setec-serve`` tells a new user: the dev-mode banner names the key and the
authorizer in effect and how to point ``setec`` at the server; a start that fails says
what is wrong (a state directory this user may not write, a port in use, a --listen
value that is almost right) and leaves nothing behind; third-party libraries' chatter
stays out of the log; ``plugins`` prints a table; ``--version`` prints one line.

Where the behaviour is at start-up, the real ``setec-serve`` console script runs as a
subprocess."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from console_scripts import clean_env, console_script

from setec_cli.config import check_state_dir, parse_listen, resolve
from setec_cli.http_server import cannot_listen
from setec_core import Plugins
from setec_core.database import Database
from setec_core.errors import ConfigError

#: linux/prctl.h and linux/capability.h: drop a capability from the bounding set.
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    """The installed plugins."""
    return Plugins.load()


def serve(
    *args: str, cwd: Path, preexec_fn: Any = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``setec-serve ARGS`` to completion, with no SETEC_* variable but ``env``."""
    return subprocess.run(
        [console_script("setec-serve"), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec_fn,
    )


def serve_until_listening(*args: str, cwd: Path) -> tuple[str, str, str]:
    """Start ``setec-serve ARGS``, wait for its ``listening on URL`` line, stop it with
    SIGTERM; return the URL, its stdout and its stderr."""
    with subprocess.Popen(
        [console_script("setec-serve"), *args],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        lines: list[str] = []
        listening = threading.Event()

        def read() -> None:
            # Every line is read here: a reader that stopped at "listening on" would
            # leave the lines its buffer already holds to no one.
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if "listening on " in line:
                    listening.set()
            listening.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert listening.wait(60), "".join(lines)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            reader.join(30)
            assert proc.stdout is not None
            out = proc.stdout.read()
        finally:
            proc.kill()
    err = "".join(lines)
    m = re.search(r"listening on (\S+)", err)
    assert m, err
    return m.group(1), out, err


def error_lines(stderr: str) -> list[str]:
    """The error lines of setec-serve's stderr (``setec-serve: error: ...``)."""
    return [line for line in stderr.splitlines() if line.startswith("setec-serve: error: ")]


# --- the state directory ------------------------------------------------------------


def without_dac_override() -> None:
    """For ``preexec_fn``: drop the capabilities that let root ignore permission bits
    (and change the mode of files it does not own), so that a test running as root
    meets the permission errors another user would."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unwritable(state: Path) -> Any:
    """Make the existing directory ``state`` one this test's ``setec-serve`` may not
    write, and return the ``preexec_fn`` to run it with: as root, the directory becomes
    another user's (nobody's, mode 0755) and root's capabilities to ignore that are
    dropped; otherwise it becomes mode 0500."""
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)
        state.chmod(0o755)
        return without_dac_override
    state.chmod(0o500)
    return None


def test_a_state_dir_of_another_user_is_not_called_uncreatable(tmp_path: Path) -> None:
    """An existing state directory this user may not write (another user's, or one
    without write permission) is named as such, with what to do, not "cannot create";
    the server does not start and the directory is left as it was."""
    state = tmp_path / "st"
    state.mkdir()
    preexec = unwritable(state)
    try:
        result = serve(
            "--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0",
            cwd=tmp_path, preexec_fn=preexec,
        )  # fmt: skip
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot drop root's capabilities here: {e}")
    assert result.returncode == 1, result.stderr
    [error] = error_lines(result.stderr)
    assert f"cannot write to state directory {str(state)!r}" in error
    assert "cannot create" not in error
    assert "choose another --state-dir" in error
    assert list(state.iterdir()) == []


def test_admin_commands_name_a_state_dir_they_cannot_write(tmp_path: Path) -> None:
    """An admin command that locks the state directory (rotate-dek) says the same of a
    directory it may not write, and changes nothing."""
    state = tmp_path / "st"
    Database.open(state, key="dev://", plugins=Plugins.load()).close()
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    preexec = unwritable(state)
    try:
        result = serve(
            "--dev", "--state-dir", str(state), "rotate-dek", cwd=tmp_path, preexec_fn=preexec
        )
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot drop root's capabilities here: {e}")
    assert result.returncode == 1, result.stderr
    [error] = error_lines(result.stderr)
    assert f"cannot write to state directory {str(state)!r}" in error
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_an_own_state_dir_without_write_permission_says_chmod(tmp_path: Path) -> None:
    """A state directory of this user's that it may not write, and that setec would not
    tighten (it is private already), says to make it writable."""
    state = tmp_path / "st"
    state.mkdir(mode=0o500)
    check = f"from setec_cli.config import check_state_dir; check_state_dir({str(state)!r})"
    try:
        result = subprocess.run(
            [sys.executable, "-c", check],
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=without_dac_override if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot drop root's capabilities here: {e}")
    assert result.returncode == 1
    assert f"ConfigError: cannot write to state directory {str(state)!r}: its mode is 0500" in (
        result.stderr
    )
    assert f"chmod 700 {state}" in result.stderr


def test_a_state_dir_setec_will_tighten_is_accepted(tmp_path: Path) -> None:
    """A missing state directory, or one of this user's that others may read (setec
    makes it 0700 at start), passes the check."""
    check_state_dir(str(tmp_path / "new" / "st"))
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    check_state_dir(str(open_dir))


# --- the listening address ------------------------------------------------------------


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
def test_a_port_in_use_is_named_and_leaves_no_state_dir(tmp_path: Path, workers: list[str]) -> None:
    """A taken port is refused before anything is made on disk: no ./setec-dev.state is
    left, and the message says the port is in use and suggests another, without the
    privileged-ports hint that belongs to a port below 1024; with --workers too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--dev", "--listen", f"127.0.0.1:{port}", *workers, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    [error] = error_lines(result.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in error
    assert "in use" in error
    assert f"--listen 127.0.0.1:{port + 1}" in error
    assert "1024" not in error
    assert "privileged" not in error
    assert not (tmp_path / "setec-dev.state").exists()


def test_a_start_that_fails_after_opening_a_new_store_removes_it(tmp_path: Path) -> None:
    """A start that fails once the store is open (here the authorizer: dev outside
    --dev) removes the state directory it created, parents included, and nothing else."""
    state = tmp_path / "new" / "st"
    result = serve(
        "--state-dir", str(state), "--kms-key-name", "dev://", "--authorizer", "dev",
        "--listen", "127.0.0.1:0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "only available with --dev" in result.stderr
    assert not (tmp_path / "new").exists()
    assert tmp_path.exists()


def test_a_failed_start_leaves_an_existing_state_dir(tmp_path: Path) -> None:
    """A state directory that existed before the start is never removed by its failure."""
    state = tmp_path / "st"
    state.mkdir(mode=0o700)
    result = serve(
        "--state-dir", str(state), "--kms-key-name", "dev://", "--authorizer", "dev",
        "--listen", "127.0.0.1:0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "only available with --dev" in result.stderr
    assert state.is_dir()


@pytest.mark.parametrize(
    ("error", "port", "expected", "absent"),
    [
        (errno.EADDRINUSE, 8080, "port is in use", "1024"),
        (errno.EACCES, 443, "below 1024", "in use"),
        (errno.EACCES, 8080, "Permission denied", "1024"),
    ],
    ids=["in use", "privileged port", "denied otherwise"],
)
def test_cannot_listen_hints_match_the_error(
    plugins: Plugins, error: int, port: int, expected: str, absent: str
) -> None:
    """Each bind error gets its own hint: the privileged-ports one only for EACCES on a
    port below 1024."""
    config = resolve({"dev": True, "listen": f"127.0.0.1:{port}"}, plugins)
    message = str(cannot_listen(config, OSError(error, os.strerror(error))))
    assert message.startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert expected in message
    assert absent not in message


def test_gos_colon_port_form_is_refused_with_both_meanings(tmp_path: Path) -> None:
    """``--listen :8081`` (Go's "every interface") is refused, suggesting the loopback
    and the every-interface spelling; under --dev only the loopback one."""
    with pytest.raises(ConfigError) as info:
        parse_listen(":8081")
    assert "did you mean 127.0.0.1:8081 (loopback only) or 0.0.0.0:8081 (every interface)?" in (
        str(info.value)
    )
    result = serve("--dev", "--listen", ":8081", cwd=tmp_path)
    assert result.returncode == 1
    [error] = error_lines(result.stderr)
    assert "did you mean 127.0.0.1:8081?" in error
    assert "every interface" not in error


@pytest.mark.parametrize(
    "value", ["127.0.0.1:99999", "127.0.0.1:65536", "[::1]:70000", "127.0.0.1:-1"]
)
def test_a_port_out_of_range_says_so(value: str) -> None:
    """A port above 65535 is named as out of range, not as a malformed address."""
    port = value.rsplit(":", 1)[1]
    with pytest.raises(ConfigError) as info:
        parse_listen(value)
    message = str(info.value)
    assert f"port {port} is out of range (1-65535" in message
    assert "not HOST:PORT" not in message


def test_port_zero_still_picks_a_free_port() -> None:
    """Port 0 stays accepted: it picks a free port, which the server prints."""
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)


def test_a_port_that_is_not_a_number_says_so() -> None:
    """``HOST:NAME`` names the port as not a number."""
    with pytest.raises(ConfigError, match=r"port 'http' is not a number"):
        parse_listen("127.0.0.1:http")


# --- the dev banner -----------------------------------------------------------------


def test_the_dev_banner_names_the_key_in_use(tmp_path: Path) -> None:
    """``--dev --kms-key-name dev://new`` says it uses dev://new, not dev://."""
    _, _, err = serve_until_listening(
        "--dev", "--kms-key-name", "dev://new", "--listen", "127.0.0.1:0", cwd=tmp_path
    )
    banner = [line for line in err.splitlines() if "dev mode:" in line]
    assert any("public dev key dev://new;" in line for line in banner), err
    assert not any("(dev://)" in line for line in banner), err


def test_the_dev_banner_describes_the_authorizer_in_effect(tmp_path: Path) -> None:
    """With --authorizer tailscale under --dev the banner names tailscale and does not
    claim every local caller is a superuser; with the dev authorizer it does."""
    _, _, err = serve_until_listening(
        "--dev", "--authorizer", "tailscale", "--tailscale-socket", str(tmp_path / "ts.sock"),
        "--listen", "127.0.0.1:0", cwd=tmp_path,
    )  # fmt: skip
    assert "superuser" not in err
    assert "dev mode: NOT SAFE FOR PRODUCTION USE; the tailscale authorizer decides" in err
    _, _, err = serve_until_listening(
        "--dev", "--state-dir", "other", "--listen", "127.0.0.1:0", cwd=tmp_path
    )
    assert err.startswith(
        "setec-serve: dev mode: NOT SAFE FOR PRODUCTION USE; every local caller is a superuser"
    )


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
def test_dev_mode_prints_the_export_line_for_the_cli(tmp_path: Path, workers: list[str]) -> None:
    """At a --dev start the server prints, on stderr and on a line of its own, the
    ``export SETEC_SERVER=URL`` that points ``setec`` at it (its real URL); stdout
    stays empty; with --workers too, once."""
    url, out, err = serve_until_listening(
        "--dev", "--listen", "127.0.0.1:0", *workers, cwd=tmp_path
    )
    assert err.count("export SETEC_SERVER=") == 1, err
    assert f"\n    export SETEC_SERVER={url}\n" in err
    assert url.startswith("http://127.0.0.1:")
    assert out == ""


# --- order of messages ----------------------------------------------------------------


def test_config_errors_come_before_any_tailscaled_warning(tmp_path: Path) -> None:
    """A start with the default (tailscale) authorizer that fails on the key or storage
    says only what is wrong: no warning about tailscaled's socket before it."""
    result = serve(
        "--state-dir", "st", "--kms-key-name", "dev://", "--storage", "nope://x",
        "--listen", "127.0.0.1:0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "unknown storage backend 'nope'" in result.stderr
    assert "tailscaled" not in result.stderr
    assert not (tmp_path / "st").exists()
    # A store opened with another key: the refusal comes before tailscaled is looked at.
    Database.open(tmp_path / "kept", key="dev://a", plugins=Plugins.load()).close()
    result = serve(
        "--state-dir", "kept", "--kms-key-name", "dev://b", "--listen", "127.0.0.1:0",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot unlock store" in result.stderr
    assert "tailscaled" not in result.stderr


# --- the log ------------------------------------------------------------------------


LOG_SCRIPT = """
import logging, sys
from setec_cli import logs
logs.configure(sys.argv[1])
for name in ("botocore.credentials", "urllib3.connectionpool", "google.auth", "hvac",
             "psycopg.pool", "setec.database"):
    logging.getLogger(name).info("info from %s", name)
logging.getLogger("botocore.credentials").warning("warning from botocore")
"""


def test_third_party_info_lines_stay_out_of_the_log() -> None:
    """At --log-level info, the SDKs' INFO records (botocore's "Found credentials...")
    are not written, their warnings and setec's INFO records are; at debug, all are."""
    info = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, "info"], capture_output=True, text=True, check=True
    ).stderr
    assert "info from setec.database" in info
    assert "warning from botocore" in info
    for name in ("botocore.credentials", "urllib3", "google.auth", "hvac", "psycopg.pool"):
        assert f"info from {name}" not in info
    debug = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, "debug"], capture_output=True, text=True, check=True
    ).stderr
    assert "info from botocore.credentials" in debug
    assert "info from psycopg.pool" in debug


# --- plugins and --version -------------------------------------------------------------


def test_plugins_prints_a_header_and_aligned_columns(tmp_path: Path) -> None:
    """``setec-serve plugins`` starts with a KIND NAME PLUGIN SCHEMES header, and each
    column starts at the same place on every line."""
    result = serve("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "PLUGIN", "SCHEMES"]
    starts = [header.index(title) for title in ("NAME", "PLUGIN", "SCHEMES")]
    assert rows
    for row in rows:
        for start in starts:
            if len(row) > start:  # an authorizer has no schemes: its row ends sooner
                assert row[start - 1] == " ", row
                assert row[start] != " ", row
    assert any(row.split()[:3] == ["storage", "backend", "sqlite"] for row in rows)


def test_version_prints_one_line(tmp_path: Path) -> None:
    """``setec-serve --version`` prints ``setec-serve (pysetec) VERSION``, the line
    format of ``setec version``."""
    result = serve("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"setec-serve (pysetec) {metadata.version('pysetec')}\n"

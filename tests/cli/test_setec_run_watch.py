"""``setec run --watch``: the program runs under setec, and is restarted (or signalled)
with the new value when one of its secrets gets a new active version.

The child is a real process: a small Python script that records, in a file, each start
with the SHA-256 of its variable (never the value) and each signal it gets.
"""

from __future__ import annotations

import hashlib
import itertools
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_scripts import clean_env, console_script, run_setec

from setec_core.testing.server import LocalServer

SECRET = b"run-watch-value-0b3c"
ROTATED = b"run-watch-rotated-e41a"
PATIENCE = 30.0

CHILD = """\
import hashlib, os, signal, sys, time
out, mode = sys.argv[1], sys.argv[2]
def log(line):
    with open(out, "a") as f:
        f.write(line + "\\n")
def stop(signum, frame):
    log(f"stop {os.getpid()} {signal.Signals(signum).name}")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else stop)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGHUP, lambda s, f: log(f"hup {os.getpid()}"))
log(f"start {os.getpid()} " + hashlib.sha256(os.environ["V"].encode()).hexdigest())
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
while True:
    time.sleep(0.02)
"""


def sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


_names = itertools.count()


@pytest.fixture
def name(server: LocalServer) -> str:
    """A secret no other test uses, holding SECRET as its active version."""
    name = f"run-watch/secret-{next(_names)}"
    client = server.client()
    client.activate(name, client.put(name, SECRET))
    return name


class Supervised:
    """``setec run --watch ... -- python CHILD OUT MODE`` as a subprocess."""

    def __init__(self, server: str, tmp: Path, options: list[str], mode: str = "wait") -> None:
        self.out = tmp / "child.log"
        script = tmp / "child.py"
        script.write_text(CHILD)
        child = [sys.executable, str(script), str(self.out), mode]
        self.proc = subprocess.Popen(
            [console_script("setec"), "run", "--watch", *options, "--", *child],
            env=clean_env(server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def lines(self) -> list[str]:
        """What the child recorded so far."""
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait_for(self, what: str, count: int = 1) -> list[str]:
        """Wait until the child recorded ``count`` lines starting with ``what``."""
        pause = threading.Event()
        for _ in range(int(PATIENCE / 0.02)):
            lines = self.lines()
            if sum(line.startswith(what) for line in lines) >= count:
                return lines
            if self.proc.poll() is not None:
                break
            pause.wait(0.02)
        raise AssertionError(f"no {count} x {what!r} in {self.lines()}")

    def finish(self, signum: int | None = signal.SIGTERM) -> tuple[int, bytes]:
        """Signal setec (unless ``None``) and return its status and output, which must
        hold no value."""
        if signum is not None:
            self.proc.send_signal(signum)
        stdout, stderr = self.proc.communicate(timeout=PATIENCE)
        output = stdout + stderr
        assert SECRET not in output
        assert ROTATED not in output
        assert b"Traceback" not in output
        return self.proc.returncode, output


@pytest.fixture
def supervised(server: LocalServer, tmp_path: Path) -> Iterator[list[Supervised]]:
    """Runs made by the test, killed if the test left them running."""
    runs: list[Supervised] = []
    yield runs
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def test_a_rotation_restarts_the_program_with_the_new_value(
    server: LocalServer, name: str, tmp_path: Path, supervised: list[Supervised]
) -> None:
    """A new active version stops the program with SIGTERM and starts it again with
    the new value; SIGTERM to setec reaches the program, and setec exits with its
    status."""
    run = Supervised(server.url, tmp_path, ["--secret", f"V={name}"])
    supervised.append(run)
    first = run.wait_for("start")[0].split()
    assert first[2] == sha(SECRET)
    client = server.client()
    client.activate(name, client.put(name, ROTATED))
    lines = run.wait_for("start", 2)
    assert lines[1] == f"stop {first[1]} SIGTERM"
    second = lines[2].split()
    assert second[2] == sha(ROTATED)
    assert second[1] != first[1]
    status, output = run.finish()
    assert status == 0
    assert run.lines()[-1] == f"stop {second[1]} SIGTERM"
    assert f'new version of "{name}"; restarting the program'.encode() in output


def test_on_change_signal_only_signals(
    server: LocalServer, name: str, tmp_path: Path, supervised: list[Supervised]
) -> None:
    """--on-change signal:HUP sends SIGHUP to the running program instead of
    restarting it."""
    run = Supervised(server.url, tmp_path, ["--secret", f"V={name}", "--on-change", "signal:HUP"])
    supervised.append(run)
    pid = run.wait_for("start")[0].split()[1]
    client = server.client()
    client.activate(name, client.put(name, ROTATED))
    lines = run.wait_for("hup")
    assert lines == [lines[0], f"hup {pid}"]
    status, output = run.finish()
    assert status == 0
    assert b"sending SIGHUP to the program" in output


def test_a_program_that_ignores_the_restart_signal_is_killed_after_the_grace(
    server: LocalServer, name: str, tmp_path: Path, supervised: list[Supervised]
) -> None:
    """A program still running --restart-grace seconds after the restart signal is
    killed, and started again with the new value."""
    options = ["--secret", f"V={name}", "--restart-grace", "0.2"]
    run = Supervised(server.url, tmp_path, options, mode="stubborn")
    supervised.append(run)
    run.wait_for("start")
    client = server.client()
    client.activate(name, client.put(name, ROTATED))
    lines = run.wait_for("start", 2)
    assert lines[1].split()[2] == sha(ROTATED)
    status, output = run.finish(signal.SIGINT)  # which it does not ignore
    assert status == 0
    assert b"did not exit within 0.2 s of SIGTERM; killing it" in output


def test_setec_exits_with_the_programs_own_status(
    server: LocalServer, name: str, tmp_path: Path, supervised: list[Supervised]
) -> None:
    """A program that exits on its own ends setec run with its exit status."""
    run = Supervised(server.url, tmp_path, ["--secret", f"V={name}"], mode="exit3")
    supervised.append(run)
    status, _ = run.finish(None)
    assert status == 3
    assert len(run.lines()) == 1


def test_watch_options_need_watch_and_valid_values(server: LocalServer, name: str) -> None:
    """--on-change and the restart options without --watch, an unknown signal or
    action: a usage error naming the option, and nothing runs."""
    for options, message in [
        (["--on-change", "signal:HUP"], b"--on-change needs --watch"),
        (["--restart-grace", "1"], b"--restart-grace needs --watch"),
        (["--watch", "--restart-signal", "NOPE"], b'"NOPE" is not a signal name'),
        (["--watch", "--on-change", "reboot"], b"is not 'restart' or 'signal:NAME'"),
    ]:
        command = ["--", sys.executable, "-c", "exit(9)"]
        proc = run_setec("run", "--secret", f"V={name}", *options, *command, server=server.url)
        assert proc.returncode == 2, options
        assert message in proc.stderr, options

"""Replicas for end-to-end tests: ``setec-serve`` processes over one PostgreSQL store,
each with a state directory (its audit log) and a replica name of its own
(docs/replicas.md), started, signalled and started again as an operator would."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from serve_process import ServeProcess, run_serve

from setec_core.client import Client

T = TypeVar("T")


class Replica:
    """One replica named ``name`` over the store at ``storage``, its state directory
    ``root/name`` (created with that name in its ``replica`` file). :meth:`start` runs
    it (again, after :meth:`stop`, on the same state directory); ``extra`` are more
    ``setec-serve`` flags (``--backup``, say).

    :ivar runs: the processes started so far, the last one current.
    """

    def __init__(self, name: str, root: Path, storage: str, *extra: str) -> None:
        self.name = name
        self.root = root
        self.storage = storage
        self.state = root / name
        self.state.mkdir(mode=0o700, parents=True)
        (self.state / "replica").write_text(name + "\n")
        self.extra = extra
        self.runs: list[ServeProcess] = []

    @property
    def args(self) -> tuple[str, ...]:
        """The flags it is started with: --dev (the dev key and loopback superusers),
        its state directory, the store, a free loopback port."""
        return (
            "--dev",
            "--state-dir",
            str(self.state),
            "--storage",
            self.storage,
            "--listen",
            "127.0.0.1:0",
            *self.extra,
        )

    def start(self) -> Replica:
        """Start a new process of this replica and wait until it listens."""
        self.runs.append(ServeProcess(*self.args, cwd=self.root).start())
        return self

    @property
    def process(self) -> ServeProcess:
        """The current (last started) process."""
        assert self.runs, f"replica {self.name} was never started"
        return self.runs[-1]

    @property
    def running(self) -> bool:
        """Whether the current process is alive."""
        proc = self.runs[-1].proc if self.runs else None
        return proc is not None and proc.poll() is None

    @property
    def url(self) -> str:
        """Where the current process listens."""
        return self.process.url

    def client(self) -> Client:
        """A client of the current process."""
        return Client(self.url, timeout=30)

    @property
    def output(self) -> str:
        """What every process of this replica printed, oldest first."""
        return "".join(run.output for run in self.runs)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the current process and wait for it to exit; its exit code."""
        return self.process.stop(signum)

    def healthz(self) -> tuple[int, str]:
        """The status and body of the current process's ``/healthz``."""
        got = requests.get(f"{self.url}/healthz", timeout=30)
        return got.status_code, got.text

    def audit_entries(self) -> list[dict[str, Any]]:
        """The entries of this replica's audit log (its state directory's)."""
        lines = (self.state / "audit.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def metric(self, name: str) -> float:
        """The value of the unlabelled metric ``name`` on the current process's
        ``/metrics``."""
        text = requests.get(f"{self.url}/metrics", timeout=30).text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert found, f"no {name} in /metrics"
        return float(found.group(1))

    def admin(self, *command: str) -> tuple[int, str]:
        """Run ``setec-serve COMMAND`` on this replica's state directory and store (dev
        key); its exit code and what it printed (stdout, then stderr)."""
        done = run_serve(
            *command,
            "--state-dir",
            str(self.state),
            "--storage",
            self.storage,
            "--kms-key-name",
            "dev://",
            cwd=self.root,
        )
        return done.returncode, done.stdout + done.stderr


@contextmanager
def replicas(
    root: Path, storage: str, *names: str, extra: tuple[str, ...] = ()
) -> Iterator[list[Replica]]:
    """Start one replica per name over ``storage`` (one after another: the first
    creates the store), and stop those still running at the end, whatever happened."""
    made = [Replica(name, root, storage, *extra) for name in names]
    try:
        if made:
            made[0].start()
            start_together(made[1:])
        yield made
    finally:
        for replica in made:
            if replica.running:
                replica.stop()


def start_together(replicas: list[Replica]) -> None:
    """Start ``replicas`` at once (each start waits for a process to load and listen)."""
    failures: list[BaseException] = []

    def start(replica: Replica) -> None:
        try:
            replica.start()
        except BaseException as e:  # raised again below, in the caller's thread
            failures.append(e)

    threads = [threading.Thread(target=start, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def eventually(check: Callable[[], T | None], *, within: float, what: str) -> tuple[T, float]:
    """Call ``check`` until it returns something other than ``None`` (an exception
    counts as not yet), for at most ``within`` seconds; return that and the seconds it
    took. Fails naming ``what`` and the last exception."""
    started = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            got = check()
        except Exception as e:  # not yet: the next try may succeed
            got, last = None, e
        waited = time.monotonic() - started
        if got is not None:
            return got, waited
        if waited > within:
            raise AssertionError(f"{what}: not within {within:g} s (last error: {last!r})")
        time.sleep(0.01)

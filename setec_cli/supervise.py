"""``setec run --watch``: run the program, and restart (or signal) it when one of its
secrets gets a new active version.

setec stays around as the program's parent instead of replacing itself with it. A
:class:`~setec_core.client.Store` holds the secrets (seeded with the values fetched
for the first start, so nothing is fetched twice) and learns of new versions through
a watch when the server offers one (docs/api.md §9.2), else by polling. On a change,
:class:`Supervisor` either restarts the program with the new values (the restart
signal, a grace period, SIGKILL, then a new start) or sends it a signal and lets it
reread its secrets some other way. Signals sent to setec are passed on to the
program, and setec exits with the program's status when it exits on its own.

Nothing here prints a value: messages name the secrets and their versions.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from setec_cli.formats import go_quote
from setec_cli.options import CommandError, inform

if TYPE_CHECKING:
    from setec_core.model import SecretValue

#: Signals setec passes on to the program. SIGINT, SIGTERM and SIGHUP also mean that
#: setec itself should end once the program has.
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_ENDING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

#: Seconds between looks at the program and at the Store's news: how late a restart
#: can start after the Store holds the new value.
_TICK = 0.1


def parse_signal(value: str) -> signal.Signals:
    """A signal by name (``TERM``, ``SIGTERM``, ``term``) or number (``15``).

    :raises ValueError: naming the value, for anything else.
    """
    text = value.strip()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            raise ValueError(f"{go_quote(value)} is not a signal number") from None
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"{go_quote(value)} is not a signal name (e.g. TERM, HUP)") from None


@dataclass(frozen=True, slots=True)
class OnChange:
    """What to do when a secret changes: restart the program (``signal`` is ``None``),
    or only send it ``signal``."""

    signal: signal.Signals | None = None

    @classmethod
    def parse(cls, value: str) -> OnChange:
        """``restart``, or ``signal:NAME`` (``signal:HUP``, ``signal:USR1``).

        :raises ValueError: naming the value and what is accepted.
        """
        if value == "restart":
            return cls()
        kind, sep, name = value.partition(":")
        if kind == "signal" and sep:
            return cls(parse_signal(name))
        raise ValueError(f"{go_quote(value)} is not 'restart' or 'signal:NAME' (e.g. signal:HUP)")


@dataclass(frozen=True, slots=True)
class Policy:
    """How :class:`Supervisor` treats the program: what a change does, and how a
    restart stops it (``restart_signal``, then SIGKILL after ``grace`` seconds)."""

    on_change: OnChange
    restart_signal: signal.Signals
    grace: float


class Supervisor:
    """Runs ``command`` as a child, restarting or signalling it when ``changed()`` says
    a secret changed.

    :param command: the program and its arguments.
    :param environment: the program's environment from the secrets held now;
        raises :class:`CommandError` (naming a secret, never its value) if a new value
        cannot be an environment variable, and the running program is then kept.
    :param changed: the names of the secrets that changed since the last call.
    :param policy: what to do on a change.
    """

    def __init__(
        self,
        command: Sequence[str],
        environment: Callable[[], Mapping[str, str]],
        changed: Callable[[], Collection[str]],
        policy: Policy,
    ) -> None:
        self._command = list(command)
        self._environment = environment
        self._changed = changed
        self._policy = policy
        self._child: subprocess.Popen[bytes] | None = None
        self._ending: signal.Signals | None = None
        self._wake = threading.Event()

    def run(self) -> int:
        """Start the program and look after it until it exits on its own or after a
        signal that ends setec; return the exit status setec should have (the program's,
        or 128 + the signal that killed it, as a shell reports it)."""
        previous = {s: signal.signal(s, self._on_signal) for s in FORWARDED}
        try:
            self._child = self._start(self._environment())
            while True:
                status = self._child.poll()
                if status is not None:
                    return _exit_status(status)
                news = () if self._ending is not None else self._changed()
                if news:
                    self._react(news)
                self._wake.wait(_TICK)
                self._wake.clear()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if sig in _ENDING:
            self._ending = sig
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(sig)
        self._wake.set()

    def _react(self, news: Collection[str]) -> None:
        what = ", ".join(go_quote(n) for n in sorted(news))
        child = self._child
        assert child is not None
        if self._policy.on_change.signal is not None:
            sig = self._policy.on_change.signal
            inform(f"setec run: new version of {what}; sending {sig.name} to the program")
            child.send_signal(sig)
            return
        try:
            env = self._environment()
        except CommandError as e:
            click.echo(f"setec run: {e.message}; the program keeps running", err=True)
            return
        inform(f"setec run: new version of {what}; restarting the program")
        if not self._stop(child):
            return  # it exited with a status of its own meanwhile: run() reports it
        if self._ending is None:
            self._child = self._start(env)

    def _stop(self, child: subprocess.Popen[bytes]) -> bool:
        """Stop the program for a restart; return whether it ended because of it."""
        if child.poll() is not None:
            return False
        child.send_signal(self._policy.restart_signal)
        try:
            child.wait(self._policy.grace)
        except subprocess.TimeoutExpired:
            inform(
                f"setec run: the program did not exit within {self._policy.grace:g} s of "
                f"{self._policy.restart_signal.name}; killing it"
            )
            child.kill()
            child.wait()
        return True

    def _start(self, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            return subprocess.Popen(self._command, env=dict(env))  # noqa: S603 - running the user's program is the point
        except OSError as e:
            from setec_cli.run import ProgramError, ProgramNotFoundError

            error = ProgramNotFoundError if isinstance(e, FileNotFoundError) else ProgramError
            raise error(
                f"cannot run {go_quote(self._command[0])}: {e.strerror or type(e).__name__}"
            ) from None


def _exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: its exit code, or 128 + the signal that
    ended it."""
    return 128 - returncode if returncode < 0 else returncode


def run_watching(
    client: object,
    held: Mapping[str, SecretValue],
    environment: Callable[[Mapping[str, bytes]], Mapping[str, str]],
    command: Sequence[str],
    policy: Policy,
    poll_interval: float,
) -> int:
    """Run ``command`` under a :class:`Supervisor`, its secrets kept by a Store that
    starts from ``held`` (the values fetched for the first start) and watches the
    server (or polls it every ``poll_interval`` seconds when it offers no watch).

    :param environment: the program's environment for the given values, by name.
    :returns: the exit status setec should have.
    """
    from setec_core.client import MemCache, Store, StoreClient
    from setec_core.client.cacheblob import CachedEntry, encode

    assert isinstance(client, StoreClient)
    seed = encode({name: CachedEntry(secret=value) for name, value in held.items()})
    store = Store(client, list(held), cache=MemCache(seed), poll_interval=poll_interval, watch=True)
    try:
        watchers = {name: store.watcher(name) for name in held}

        def current() -> Mapping[str, str]:
            return environment({name: w.get() for name, w in watchers.items()})

        def changed() -> list[str]:
            return [name for name, w in watchers.items() if w.changed()]

        return Supervisor(command, current, changed, policy).run()
    finally:
        store.close()

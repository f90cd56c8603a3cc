"""``setec-serve --workers N``: N serving processes on this host over one store and one
listening socket, so that one host uses all its cores (a Python process runs Python code
on one core at a time).

The parent resolves the configuration, binds the listening socket and forks the workers;
it never serves. Each worker is a whole ``setec-serve`` (the ordinary serve path) on the
inherited socket, with its own state directory for its audit log, and the store they
all share (``--storage``, or the state directory's ``secrets.db``):

* worker 0 uses ``--state-dir`` itself, so the layout is that of one process;
* worker ``i`` uses ``STATE_DIR/workers/i/`` (created 0700).

Worker 0 starts first, alone (it creates a new store), then the others together; the
parent says "listening on URL" once all of them serve. It forwards SIGTERM and SIGINT
(every worker drains and stops; the parent exits 0 if all stopped cleanly) and SIGHUP
(every worker reloads), and reaps them. A worker that dies after serving for
:data:`STEADY_SECONDS` is replaced in its slot; one that dies sooner, or fails to start,
stops them all, with one line saying which worker and why (a crash loop must not spin).

The parent runs no thread of its own: it forks replacements while serving, and a child
forked from a process with other threads may inherit a lock one of them held, locked
forever. So it does not set up logging (whose writer thread each worker starts for
itself) and waits for signals, worker status and deaths with one selector.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from setec_cli import logs
from setec_cli.config import ServerConfig, resolve
from setec_cli.http_server import SHUTDOWN_TIMEOUT, bind
from setec_cli.say import dev_export_hint, fail, say
from setec_core.errors import ConfigError, SetecError

if TYPE_CHECKING:
    import socket

    from setec_core.plugins import Plugins

#: The directory under ``--state-dir`` holding the state directories of workers 1 and up.
WORKERS_DIR = "workers"
#: Seconds a worker must have served for its death to be taken as a crash to recover
#: from (it is replaced); one that dies sooner would only die again, so everything stops.
STEADY_SECONDS = 3.0
#: Seconds the workers get to stop after the parent is told to: their own drain
#: (:data:`~setec_cli.http_server.SHUTDOWN_TIMEOUT`) and closing the database. Those
#: still running then are killed.
STOP_TIMEOUT = SHUTDOWN_TIMEOUT + 20
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Serve(Protocol):
    """The ordinary serve path (:func:`setec_cli.serve.serve`), run by each worker."""

    def __call__(
        self,
        config: ServerConfig,
        *,
        plugins: Plugins | None = None,
        ready: Callable[[str], None] | None = None,
        access_lines: Callable[[str], None] | None = None,
        worker: bool = False,
    ) -> None: ...


def serve_workers(options: Mapping[str, Any], plugins: Plugins, serve: Serve) -> NoReturn:
    """Run ``setec-serve`` with ``--workers`` N > 1: check the flag values ``options``,
    run the workers until stopped, and exit with the status :meth:`Supervisor.run`
    returns (a startup problem is one line and status 1, as for one process).

    :param serve: the serve path each worker runs.
    """
    try:
        config = resolve(options, plugins)
        level = str(options.get("log_level") or "info")

        def serve_one(config: ServerConfig, ready: Callable[[str], None]) -> None:
            # In the worker: logging's writer threads are its own.
            serve(
                config,
                plugins=plugins,
                ready=ready,
                access_lines=logs.configure(level),
                worker=True,
            )

        code = Supervisor(config, serve_one).run()
    except (ConfigError, SetecError) as e:
        fail(str(e))
    sys.exit(code)


def worker_state_dir(state_dir: str | os.PathLike[str], index: int) -> Path:
    """The state directory of worker ``index`` of a server on ``state_dir``: the
    directory itself for worker 0, ``workers/INDEX`` under it for the others."""
    if index == 0:
        return Path(state_dir)
    return Path(state_dir, WORKERS_DIR, str(index))


@dataclass
class _Worker:
    """One worker slot and the process serving in it now."""

    index: int
    state_dir: Path
    pid: int = 0
    ready: bool = False
    #: When it said it serves (monotonic seconds).
    serving_since: float = 0.0
    #: The read end of the process's status pipe, until its end of file.
    pipe: int | None = None
    said: bytes = b""
    error: str = ""
    #: The wait status, once reaped.
    status: int | None = None

    @property
    def running(self) -> bool:
        return self.pid != 0 and self.status is None


class Supervisor:
    """The parent of ``--workers``: binds, forks the workers, forwards signals to them,
    replaces those that die, and stops them all (see the module's docs).

    :param config: the server's configuration (``config.workers`` workers).
    :param serve_one: runs one worker's server with the configuration given, calling
        its ``ready`` argument once it serves; returns when it stopped.
    """

    def __init__(
        self, config: ServerConfig, serve_one: Callable[[ServerConfig, Callable[[str], None]], None]
    ) -> None:
        self.config = config
        self.serve_one = serve_one
        self.workers = [
            _Worker(i, worker_state_dir(config.state_dir, i)) for i in range(config.workers)
        ]
        #: The line saying why everything stops, if something failed.
        self.failure = ""
        self.stopping = False
        self._pid = os.getpid()
        self._signals: list[int] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[int, int] | None = None
        # The listening sockets: one per worker slot (TCP), or one shared (unix). The
        # parent keeps them open, so that connections wait for a slot's replacement.
        self._sockets: list[socket.socket] = []
        self._url = ""
        self._announced = False
        self._stopped: set[int] = set()  # the pids sent SIGTERM

    def run(self) -> int:
        """Serve with the workers until a stop signal or a failure.

        :returns: the exit status: 0 if every worker stopped cleanly when asked to.
        :raises ConfigError: if a state directory cannot be made or the address cannot
            be bound.
        """
        from setec_core.opening import prepare_state_dir

        # Bound before anything is made on disk, so that a taken port leaves no new
        # state directory behind (as a single setec-serve does).
        self._sockets, self._url = bind(self.config, len(self.workers))
        try:
            prepare_state_dir(self.config.state_dir)
            if len(self.workers) > 1:
                # Made here, not by the workers: mkdir's parents=True would make
                # workers/ with the default mode rather than 0700.
                prepare_state_dir(Path(self.config.state_dir, WORKERS_DIR))
                for worker in self.workers[1:]:
                    prepare_state_dir(worker.state_dir)
        except BaseException:
            self._close_sockets()
            raise
        saved = {signum: signal.getsignal(signum) for signum in _HANDLED}
        try:
            self._selector = selectors.DefaultSelector()
            self._wake = os.pipe()
            for fd in self._wake:
                os.set_blocking(fd, False)
            self._selector.register(self._wake[0], selectors.EVENT_READ)
            for signum in _HANDLED:
                signal.signal(signum, self._on_signal)
            # The handlers only note the signal; this pipe wakes the selector.
            signal.set_wakeup_fd(self._wake[1], warn_on_full_buffer=False)
            return self._supervise()
        finally:
            # A worker leaves through here too (SystemExit, once it has served): none
            # of this is its to undo.
            if os.getpid() == self._pid:
                self._clean_up(saved)

    def _supervise(self) -> int:
        self._start(self.workers[0])
        while not self.stopping and not self.failure:
            if self.workers[0].ready:
                for worker in self.workers[1:]:
                    if not worker.pid:
                        self._start(worker)
                if not self._announced and all(w.ready for w in self.workers):
                    say(f"listening on {self._url} ({len(self.workers)} workers)")
                    if self.config.dev and self.config.unix_socket is None:
                        dev_export_hint(self._url)
                    self._announced = True
            self._poll(1.0)
        return self._stop_all()

    # --- starting a worker ---------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        # fork() copies only the calling thread: a lock another thread held would stay
        # locked in the child forever. Nothing in this process starts a thread (it sets
        # up no logging, and prints with say()); this checks that it stays so.
        if threading.active_count() != 1:
            names = ", ".join(t.name for t in threading.enumerate())
            raise SetecError(
                f"cannot start worker {worker.index}: this process runs threads ({names}), "
                "so forking it is unsafe; a plugin may have started one when it loaded"
            )
        if worker.pipe is not None:  # the last process in this slot's, never ended
            self._close_pipe(worker)
        read, write = os.pipe()
        # Or the child would write out again what this process had buffered.
        sys.stdout.flush()
        sys.stderr.flush()
        # Held off across the fork: a signal the parent forwards to a child that has
        # not yet reset its handlers would run the parent's and be lost.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        pid = os.fork()
        if pid == 0:
            os.close(read)
            # The rest of the way out is the ordinary exit of a setec-serve process
            # (the log's writer flushes at exit).
            raise SystemExit(self._be_worker(worker, write, blocked))
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write)
        os.set_blocking(read, False)
        worker.pid, worker.ready = pid, False
        worker.pipe, worker.said, worker.error, worker.status = read, b"", "", None
        assert self._selector is not None
        self._selector.register(read, selectors.EVENT_READ, worker)
        say(f"worker {worker.index}: pid {pid}, state dir {worker.state_dir}")

    def _be_worker(self, worker: _Worker, status: int, blocked: set[int]) -> int:
        # In the child. The parent's signal handling, selector, pipes and socket object
        # are not its own: reset and drop them first.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        # Python's own default (KeyboardInterrupt), never ignored; the Runner installs
        # its handler once it serves.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        assert self._selector is not None
        assert self._wake is not None
        assert self._sockets
        self._selector.close()
        for fd in self._wake:
            os.close(fd)
        for other in self.workers:
            if other.pipe is not None:
                os.close(other.pipe)
                other.pipe = None
        # The slot's descriptor passes to the worker's front, which closes it; the
        # parent's socket object lets go of it, so that nothing closes that number
        # twice. The other slots' sockets are not this worker's to serve.
        mine = self._sockets[worker.index % len(self._sockets)]
        for sock in self._sockets:
            if sock is not mine:
                sock.close()
        listen_fd = mine.detach()
        config = replace(
            self.config,
            state_dir=str(worker.state_dir),
            storage=self.config.storage or _default_storage(self.config.state_dir),
            listen_fd=listen_fd,
        )
        reporter = _StatusPipe(status)
        try:
            self.serve_one(config, reporter.ready)
        except KeyboardInterrupt:
            # SIGINT while starting (a terminal's ^C reaches every worker): the parent
            # is stopping everything.
            return 128 + signal.SIGINT
        except (ConfigError, SetecError) as e:
            if not reporter.report_error(str(e)):
                say(f"error: {e}")
            return 1
        finally:
            reporter.close()
        return 0

    # --- watching ------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _poll(self, timeout: float) -> None:
        assert self._selector is not None
        assert self._wake is not None
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake[0], 512):
                        pass
            else:
                self._read_status(key.data)
        while self._signals:
            self._take(self._signals.pop(0))
        for worker in self.workers:
            if worker.running:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
                if pid:
                    worker.status = status
                    self._died(worker)

    def _take(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                say("stop signal received, stopping the workers")
            self.stopping = True
            self._stop_running()
            self._close_sockets()
        elif signum == signal.SIGHUP:
            # Only to workers that serve: one still starting reads its configuration
            # anyway, and would be killed by a SIGHUP before it handles one.
            serving = [w for w in self.workers if w.running and w.ready]
            say(f"SIGHUP: asking {len(serving)} workers to reload")
            self._send(signal.SIGHUP, serving)

    def _stop_running(self) -> None:
        # Once each: a worker's own ^C may be on its way too.
        running = [w for w in self.workers if w.running and w.pid not in self._stopped]
        self._stopped.update(w.pid for w in running)
        self._send(signal.SIGTERM, running)

    def _send(self, signum: int, workers: list[_Worker]) -> None:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)

    def _read_status(self, worker: _Worker) -> bool:
        # A worker writes "ready", or "error REASON", then closes its end. Returns
        # whether there was anything to read (data, or the end of the file).
        assert worker.pipe is not None
        assert self._selector is not None
        try:
            data = os.read(worker.pipe, 4096)
        except BlockingIOError:
            return False
        if data:
            worker.said += data
            lines = worker.said.split(b"\n")
            if b"ready" in lines[:-1] and not worker.ready:
                worker.ready, worker.serving_since = True, time.monotonic()
                if self._announced:  # a replacement
                    say(f"worker {worker.index}: pid {worker.pid} serving")
            for line in lines[:-1]:
                if line.startswith(b"error ") and not worker.error:
                    worker.error = line[len(b"error ") :].decode(errors="replace")
                    if not self.stopping and not self.failure:
                        self.failure = f"worker {worker.index}: {worker.error}"
            return True
        self._close_pipe(worker)
        return True

    def _close_pipe(self, worker: _Worker) -> None:
        assert worker.pipe is not None
        assert self._selector is not None
        self._selector.unregister(worker.pipe)
        os.close(worker.pipe)
        worker.pipe = None

    def _died(self, worker: _Worker) -> None:
        while worker.pipe is not None and self._read_status(worker):
            pass  # what it wrote before it died
        if self.stopping or self.failure:
            return
        assert worker.status is not None
        how = _how(worker.status)
        ran = time.monotonic() - worker.serving_since
        if not worker.ready:
            self.failure = (
                f"worker {worker.index} (pid {worker.pid}) {how} before it served; see the "
                "log above"
            )
        elif ran < STEADY_SECONDS:
            self.failure = (
                f"worker {worker.index} (pid {worker.pid}) {how} {ran:.1f} s after it "
                "began to serve; stopping, since a worker that dies that soon would only "
                "die again (see the log above)"
            )
        else:
            say(
                f"worker {worker.index} (pid {worker.pid}) {how} after serving "
                f"{ran:.1f} s; starting a replacement"
            )
            self._start(worker)

    # --- stopping ------------------------------------------------------------------

    def _close_sockets(self) -> None:
        # Once stopping, new connections must be refused at once, as a single server
        # refuses them, so that a load balancer tries elsewhere: the kernel would queue
        # them on the parent's copies of the sockets while the workers drain.
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def _stop_all(self) -> int:
        self.stopping = True
        self._stop_running()
        self._close_sockets()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(w.running for w in self.workers) and time.monotonic() < deadline:
            self._poll(0.5)
        for worker in self.workers:
            if worker.running:
                say(
                    f"worker {worker.index} (pid {worker.pid}) did not stop within "
                    f"{STOP_TIMEOUT} s; killing it"
                )
                self._send(signal.SIGKILL, [worker])
                _, worker.status = os.waitpid(worker.pid, 0)
        if self.failure:
            say(f"error: {self.failure}")
            return 1
        for worker in self.workers:
            if worker.pid and not _stopped_cleanly(worker):
                assert worker.status is not None
                say(
                    f"error: worker {worker.index} (pid {worker.pid}) "
                    f"{_how(worker.status)} while stopping; see the log above"
                )
                return 1
        say("stopped: every worker stopped cleanly")
        return 0

    def _clean_up(self, saved: dict[signal.Signals, Any]) -> None:
        # Normally every worker has been reaped by now; after a failure in this process
        # (an exception out of the loop), none may be left running without a parent.
        running = [w for w in self.workers if w.running]
        self._send(signal.SIGTERM, running)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in running:
            with contextlib.suppress(ChildProcessError):
                while not os.waitpid(worker.pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        self._send(signal.SIGKILL, [worker])
                        os.waitpid(worker.pid, 0)
                        break
                    time.sleep(0.1)
        signal.set_wakeup_fd(-1)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        if self._selector is not None:
            self._selector.close()
        for fd in (*(self._wake or ()), *(w.pipe for w in self.workers if w.pipe is not None)):
            os.close(fd)
        bound = bool(self._sockets) or self._url != ""
        self._close_sockets()
        if bound and self.config.unix_socket is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.config.unix_socket)


class _StatusPipe:
    """A worker's end of its status pipe: one line, ``ready`` or ``error REASON``."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def ready(self, url: str) -> None:
        self._say(b"ready\n")
        self.close()

    def report_error(self, reason: str) -> bool:
        """Tell the parent why this worker could not start; False if it had started
        (the parent is no longer listening)."""
        if self._fd is None:
            return False
        self._say(b"error " + " ".join(reason.split()).encode() + b"\n")
        return True

    def _say(self, line: bytes) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # the parent is gone
                os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _default_storage(state_dir: str) -> str:
    from setec_core.opening import default_storage_uri

    return default_storage_uri(Path(state_dir))


def _how(status: int) -> str:
    """How a process ended, from its wait status: ``exited with status N`` or ``was
    killed by SIGNAME``."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _stopped_cleanly(worker: _Worker) -> bool:
    # Status 0; or, for a worker stopped before it served, the stop signal itself.
    assert worker.status is not None
    if os.WIFEXITED(worker.status) and os.WEXITSTATUS(worker.status) == 0:
        return True
    if worker.ready:
        return False
    if os.WIFSIGNALED(worker.status):
        return os.WTERMSIG(worker.status) in (signal.SIGTERM, signal.SIGINT)
    return os.WEXITSTATUS(worker.status) == 128 + signal.SIGINT

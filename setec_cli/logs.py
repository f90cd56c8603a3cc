"""``setec-serve``'s logging: records through a queue to one writer thread, and the
access log's lines in batches beside them.

Request threads never write to stderr themselves: a write holds the stream's lock across
a system call, and every other request thread would queue up behind it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The loggers of the libraries plugins use (AWS, Google Cloud, Vault, PostgreSQL, HTTP),
#: kept to their warnings unless the level is ``debug``: their INFO records (botocore's
#: "Found credentials in environment variables.") say nothing an operator acts on.
THIRD_PARTY = ("boto3", "botocore", "s3transfer", "urllib3", "google", "grpc", "hvac", "psycopg")


class _QueueHandler(logging.handlers.QueueHandler):
    """Puts records on the queue as they are: the writer thread formats them once.

    The standard ``prepare`` formats each record and copies it on the calling thread so
    that records whose arguments are mutable objects are frozen in time; setec's log
    calls pass only strings and numbers, so that was pure cost on a request thread.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class AccessLines:
    """Writes access-log lines in batches, each formatted as a ``setec.http.access``
    INFO record would be (``FORMAT``), from a writer thread that wakes every
    ``interval`` seconds.

    A log record costs a request thread more than a whole database get does (the record,
    the handler's lock, the queue); appending a string to a deque costs almost nothing,
    and one ``write`` carries every line of the last ``interval``.

    :param stream: where lines go (stderr).
    :param interval: seconds between writes; a line appears at most this late.
    """

    def __init__(self, stream: TextIO, *, interval: float = 0.05) -> None:
        self._stream = stream
        self._interval = interval
        self._lines: collections.deque[tuple[float, str]] = collections.deque()
        # formatTime without milliseconds: they are added per line.
        self._formatter = logging.Formatter(FORMAT)
        self._formatter.default_msec_format = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="setec-access-log", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        """Queue ``line`` (a request thread's whole cost of logging it)."""
        self._lines.append((time.time(), line))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        lines = self._lines
        if not lines:
            return
        out = []
        record = logging.makeLogRecord({"levelname": "INFO", "name": "setec.http.access"})
        second, stamp = -1, ""
        while lines:
            when, line = lines.popleft()
            if int(when) != second:
                # The Formatter's time, to the second, once a second; then milliseconds.
                second = int(when)
                record.created, record.msecs = second, 0
                stamp = self._formatter.formatTime(record)
            millis = int((when - second) * 1000)
            out.append(f"{stamp},{millis:03d} INFO setec.http.access: {line}\n")
        try:
            self._stream.write("".join(out))
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not kill the writer
            pass

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._stop.set()
        self._thread.join(5)


def configure(level: str) -> AccessLines | None:
    """Send every log record to stderr through a queue and one writer thread, and return
    the :class:`AccessLines` for the app's access log (``None`` if ``level`` hides INFO
    records). Below WARNING, only ``level`` ``debug`` lets through the records of the
    libraries in :data:`THIRD_PARTY`."""
    # What logging would otherwise record for every line and the format never shows
    # (the "Optimization" section of the logging HOWTO): the caller's file and line,
    # found by walking the stack, and the thread and process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [_QueueHandler(records)]
    root.setLevel(getattr(logging, level.upper()))
    quiet = max(root.level, logging.WARNING) if level != "debug" else logging.NOTSET
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(quiet)
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    atexit.register(listener.stop)
    if not logging.getLogger("setec.http.access").isEnabledFor(logging.INFO):
        return None
    lines = AccessLines(sys.stderr)
    atexit.register(lines.close)
    return lines

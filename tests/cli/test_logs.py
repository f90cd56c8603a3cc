"""setec-serve's logging: access lines are written in batches, formatted exactly as a
``setec.http.access`` INFO record would be, in order, and none is lost at close."""

from __future__ import annotations

import io
import logging
import re
import threading

from setec_cli.logs import FORMAT, AccessLines


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.writes += 1
            return super().write(text)


def test_access_lines_look_like_log_records_and_are_batched() -> None:
    """Lines from many threads arrive whole, in each thread's order, in far fewer writes
    than lines, each prefixed as the log's Formatter would prefix the record."""
    stream = CountingStream()
    lines = AccessLines(stream, interval=0.02)

    def worker(n: int) -> None:
        for i in range(200):
            lines(f'{{"worker": {n}, "i": {i}}}')

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines.close()
    out = stream.getvalue().splitlines()
    assert len(out) == 800
    record = logging.makeLogRecord({"levelname": "INFO", "name": "setec.http.access", "msg": "m"})
    expected = logging.Formatter(FORMAT).format(record)
    shape = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO setec\.http\.access: (.*)")
    assert shape.fullmatch(expected.replace(": m", ": {}"))
    for n in range(4):
        mine = [line for line in out if f'"worker": {n},' in line]
        assert [
            int(shape.fullmatch(line).group(1).split('"i": ')[1][:-1]) for line in mine
        ] == list(  # type: ignore[union-attr]
            range(200)
        )
    assert stream.writes < 100


def test_a_broken_stream_does_not_stop_the_writer() -> None:
    """A closed stderr makes writes fail; the writer thread carries on and closes."""
    stream = io.StringIO()
    lines = AccessLines(stream, interval=0.01)
    stream.close()
    lines("x")
    lines.flush()
    lines.close()

"""The audit log's chain: how each line is linked to the one before it, and how a file
of lines is checked.

Every line ends with ``"prev":"LINK"}``. There are two kinds of link:

* keyed: ``hmac-sha256:`` and 64 hex digits, the HMAC-SHA256 of the previous line's
  bytes (without its newline) under the store's audit key. The first line of a file
  links to :data:`START` followed by the 32 bytes its ``continues`` member names (a file
  started by ``setec-serve audit rotate`` continues the chain of the file before it;
  the member is on that first line only). Without the key nobody can write a line that
  links, so a line edited, inserted or removed anywhere, a suffix rewritten, or a file
  started over, breaks the chain;
* plain: 64 hex digits, the SHA-256 of the previous line, or :data:`GENESIS` on the first
  line. Written by earlier versions of setec and by an :class:`~setec_core.audit.AuditLog`
  that was never given a key. Anyone can compute these.

Once a keyed line has been written, every later line is keyed: a plain line after a
keyed one is a line someone without the key added. Plain lines before the first keyed
line are bound to it (the first keyed line is a MAC of the last plain line, which holds
the hash of the one before, and so on), so they are covered too once a keyed line
follows them.

What no chain can show from the file alone is where it ought to end: the Database
records the *head*, the byte range and MAC of the last line made durable
(:class:`AuditHead`), in the store's integrity entry with every commit and at close,
and checks at open that the file still holds that line and that everything after it
links (:func:`check_tail`). Lines of a Database's log also carry ``commits``, the number
of store commits made when the line was written, so that a store rolled back to an
earlier state is caught by the lines written after that state.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from setec_core.crypto import Mac
from setec_core.errors import ConfigError

#: The plain link of the first line of a file without a key.
GENESIS = "0" * 64
#: What a keyed link starts with.
KEYED = "hmac-sha256:"
#: What the first keyed line of a file is a MAC of (followed by its ``continues`` bytes).
START = b"setec audit log start v1\n"

_PREV = b',"prev":"'
_COMMITS = b',"commits":'
_CONTINUES = b',"continues":"'
_HEX = frozenset(b"0123456789abcdef")
_CHUNK = 1 << 20


class ChainKey:
    """The audit key, ready to link lines. Its ``repr`` never shows the key."""

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        self._mac = Mac(key)

    def link(self, line: bytes) -> str:
        """The keyed link to ``line`` (what the line after it carries in ``prev``)."""
        return KEYED + self._mac.hexdigest(line)

    def start(self, continues: bytes = b"") -> str:
        """The keyed link of a file's first line, continuing from ``continues``."""
        return KEYED + self._mac.hexdigest(START + continues)

    def seal_lines(self, stamped: Sequence[str], prev: str) -> tuple[list[bytes], str]:
        """Finish each of ``stamped`` (a line up to its ``prev`` value) with the link to
        the line before it, the first with ``prev``; return the lines and the link the
        next line will carry. The audit log's hot path: kept to one HMAC per line."""
        hexdigest = self._mac.hexdigest
        lines = []
        for text in stamped:
            line = f'{text}{prev}"}}'.encode()
            prev = KEYED + hexdigest(line)
            lines.append(line)
        return lines, prev

    def __repr__(self) -> str:
        return "ChainKey(<redacted>)"


def plain_link(line: bytes) -> str:
    """The plain link to ``line``: SHA-256, hex."""
    return hashlib.sha256(line).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditHead:
    """Where the chain stood: the last durable line spans bytes ``start`` to ``end`` of
    the file (its newline is the byte before ``end``), and ``link`` is the keyed link to
    it, which only the holder of the audit key can compute."""

    start: int
    end: int
    link: str


def link_of(line: bytes) -> str | None:
    """The link a line carries in ``prev``, or ``None`` if it does not end as our
    lines do."""
    if not line.endswith(b'"}'):
        return None
    at = line.rfind(_PREV)
    if at < 0:
        return None
    value = line[at + len(_PREV) : -2]
    digits = value[len(KEYED) :] if value.startswith(KEYED.encode()) else value
    if len(digits) != 64 or not _HEX.issuperset(digits):
        return None
    return value.decode("ascii")


_REPLICA = b',"replica":"'


def claim_of(line: bytes) -> int | None:
    """The ``commits`` a line carries, or ``None``."""
    at = line.rfind(_COMMITS)
    if at < 0:
        return None
    start = at + len(_COMMITS)
    end = line.find(b",", start)
    digits = line[start:end]
    return int(digits) if digits.isdigit() else None


def replica_of(line: bytes) -> str:
    """The ``replica`` a line carries (names hold no character JSON escapes), or
    ``""``."""
    at = line.rfind(_REPLICA)
    if at < 0:
        return ""
    start = at + len(_REPLICA)
    end = line.find(b'"', start)
    return line[start:end].decode("ascii", "replace") if end > start else ""


def continues_of(line: bytes) -> bytes | None:
    """The bytes a file's first line continues from (its ``continues`` member), or
    ``None`` if it has none (or a malformed one)."""
    at = line.rfind(_CONTINUES)
    if at < 0:
        return None
    start = at + len(_CONTINUES)
    digits = line[start : start + 64]
    if len(digits) != 64 or not _HEX.issuperset(digits) or line[start + 64 : start + 65] != b'"':
        return None
    return bytes.fromhex(digits.decode("ascii"))


def _expected(key: ChainKey, line: bytes, before: bytes | None) -> str:
    if before is not None:
        return key.link(before)
    return key.start(continues_of(line) or b"")


@dataclass(frozen=True)
class TailCheck:
    """What :func:`check_tail` found: ``problem`` is ``""`` if the chain is whole, and
    ``claim`` the highest ``commits`` of the recorded line and those after it (``None``
    if none has one), first written at byte ``claim_at``."""

    problem: str = ""
    claim: int | None = None
    claim_at: int = 0


def check_tail(
    read: Callable[[int, int], bytes], size: int, key: ChainKey, recorded: AuditHead
) -> TailCheck:
    """Check that a log of ``size`` bytes, read with ``read(start, end)``, still holds
    the ``recorded`` line and that every line after it links under ``key``; report the
    highest ``commits`` claimed from there on. Reads the recorded line and the tail
    only: the cost is that of the lines written since the head was recorded."""
    if size < recorded.end:
        return TailCheck(
            f"audit.log ends before the entry the store recorded (that line ends at byte "
            f"{recorded.end}, the file at byte {size}): lines were cut from its end, or the "
            "file was emptied or replaced"
        )
    line = read(recorded.start, recorded.end)
    before = read(recorded.start - 1, recorded.start) if recorded.start > 0 else b"\n"
    if (
        before != b"\n"
        or not line.endswith(b"\n")
        or b"\n" in line[:-1]
        or key.link(line[:-1]) != recorded.link
    ):
        return TailCheck(
            f"audit.log does not hold the entry the store recorded at bytes "
            f"{recorded.start}-{recorded.end}: the file was edited there, cut, or replaced "
            "by another file"
        )
    previous = line[:-1]
    top, top_at = claim_of(previous), recorded.start
    for start, raw in _lines(read, recorded.end, size):
        current = raw[:-1]
        link = link_of(current)
        problem = ""
        if not raw.endswith(b"\n"):
            problem = f"audit.log ends in a partial line at byte {start}"
        elif link is None or not link.startswith(KEYED):
            problem = (
                f"audit.log has a line at byte {start}, after the entry the store "
                "recorded, that is not keyed: a writer without the audit key added it"
            )
        elif link != key.link(previous):
            problem = (
                f"audit.log line at byte {start}, after the entry the store recorded, "
                "does not follow the line before it: lines there were edited, inserted "
                "or removed"
            )
        if problem:
            return TailCheck(problem, top, top_at)
        claim = claim_of(current)
        if claim is not None and (top is None or claim > top):
            top, top_at = claim, start
        previous = current
    return TailCheck("", top, top_at)


def _lines(read: Callable[[int, int], bytes], start: int, end: int) -> Iterator[tuple[int, bytes]]:
    # Whole lines from start to end, read a chunk at a time; the last may lack its
    # newline. Yields (offset of the line, line with its newline).
    buffer, offset, at = b"", start, start
    while at < end:
        chunk = read(at, min(end, at + _CHUNK))
        if not chunk:
            break
        at += len(chunk)
        buffer += chunk
        lines = buffer.split(b"\n")
        buffer = lines.pop()
        for line in lines:
            yield offset, line + b"\n"
            offset += len(line) + 1
    if buffer:
        yield offset, buffer


@dataclass
class AuditReport:
    """What :func:`verify` found.

    :param entries: how many lines were read.
    :param head: the link the next line will carry (``""`` if the file has keyed lines
        and no key was given).
    :param problems: one message per problem, naming the line number.
    :param plain: lines with plain SHA-256 links (written before keyed chaining); they
        are covered by the first keyed line after them, if there is one.
    :param keyed: lines with keyed links.
    :param checked: whether the keyed links were checked (a key was given).
    :param continues: the link this file's first line continues from (hex), if it
        continues an earlier file.
    :param recorded_line: the line number of the head the store recorded, 0 if no head
        was given or it was not found.
    :param after_recorded: how many lines follow that head.
    :param notes: remarks that are not problems (a line being written, skipped).
    """

    entries: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)
    plain: int = 0
    keyed: int = 0
    checked: bool = False
    continues: str = ""
    recorded_line: int = 0
    after_recorded: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if no problem was found."""
        return not self.problems


def verify(
    path: str | os.PathLike[str],
    key: bytes | ChainKey | None = None,
    *,
    recorded: AuditHead | None = None,
    commits: int | None = None,
    in_use: bool = False,
) -> AuditReport:
    """Check the chain of the audit log at ``path``, reading it all.

    Without ``key`` only the plain links are checked, and the keyed lines for their form
    (:attr:`AuditReport.checked` is False): a keyed chain cannot be checked without its
    key, and ``setec-serve audit verify`` always has it.

    :param key: the store's audit key.
    :param recorded: the head the store recorded; its absence from the file is a
        problem.
    :param commits: the commits the store's integrity entry records; a line from the
        recorded head on claiming more is a problem (the store was rolled back).
    :param in_use: a server is writing the file: a partial last line is being written,
        not torn, and is skipped.
    :raises ConfigError: if the file cannot be read.
    """
    chain = ChainKey(key) if isinstance(key, bytes) else key
    report = AuditReport(checked=chain is not None)
    problems = report.problems
    previous: bytes | None = None
    keyed_seen = 0
    offset = 0
    try:
        with Path(path).open("rb") as f:
            for number, raw in enumerate(f, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.endswith(b"\n"):
                    if in_use:
                        report.notes.append(f"line {number} is being written; skipped")
                        offset = start
                        break
                    report.entries = number
                    problems.append(f"line {number}: torn (no newline at the end)")
                    break
                report.entries = number
                line = raw[:-1]
                try:
                    if not isinstance(json.loads(line), dict):
                        raise ValueError("not an object")
                except (ValueError, RecursionError):
                    problems.append(f"line {number}: not a JSON object")
                link = link_of(line)
                if link is None:
                    problems.append(f"line {number}: has no link to the line before it")
                elif link.startswith(KEYED):
                    report.keyed += 1
                    keyed_seen = keyed_seen or number
                    _check_keyed(report, chain, number, line, link, previous)
                elif keyed_seen:
                    problems.append(
                        f"line {number}: has a plain SHA-256 link after keyed lines (from "
                        f"line {keyed_seen}): it was added by a writer without the audit key"
                    )
                else:
                    report.plain += 1
                    expected = GENESIS if previous is None else plain_link(previous)
                    if link != expected:
                        what = (
                            "the first line does not start a chain"
                            if previous is None
                            else "does not follow the line before it"
                        )
                        problems.append(
                            f"line {number}: {what} (a line before it was edited, inserted "
                            "or removed)"
                        )
                if recorded is not None and (start, offset) == (recorded.start, recorded.end):
                    if chain is not None and chain.link(line) != recorded.link:
                        problems.append(
                            f"line {number}: is not the entry the store recorded there (it "
                            "was edited)"
                        )
                    else:
                        report.recorded_line = number
                elif report.recorded_line:
                    report.after_recorded += 1
                # Lines before the recorded head were vouched for when it was recorded
                # (a restore legitimately leaves older lines claiming more commits).
                claim = claim_of(line) if report.recorded_line else None
                if commits is not None and claim is not None and claim > commits:
                    problems.append(
                        f"line {number}: was written when the store had made {claim} commits, "
                        f"but its integrity entry records {commits}: the store was rolled back"
                    )
                previous = line
    except OSError as e:
        raise ConfigError(f"cannot read audit log {str(path)!r}: {e.strerror}") from None
    if recorded is None and commits is not None and previous is not None:
        # A log with no recorded head (a replica that joined and has not recorded one
        # yet): as at a start, its last line must not claim more than the store made.
        claim = claim_of(previous)
        if claim is not None and claim > commits:
            problems.append(
                f"its last line was written when the store had made {claim} commits, but "
                f"its integrity entry records {commits}: the store was rolled back"
            )
    if (
        recorded is not None
        and not report.recorded_line
        and not any("the entry the store recorded" in p for p in problems)
    ):
        if offset < recorded.end:
            problems.append(
                f"the file ends before the entry the store recorded (that line ends at "
                f"byte {recorded.end}, the file at byte {offset}): lines were cut from its "
                "end, or the file was emptied or replaced"
            )
        else:
            problems.append(
                f"no line of the file spans bytes {recorded.start}-{recorded.end}, where the "
                "store recorded its last entry: lines before it were edited, inserted or "
                "removed, or this is another file"
            )
    if previous is None:
        report.head = chain.start() if chain is not None else GENESIS
    elif chain is not None:
        report.head = chain.link(previous)
    else:
        report.head = "" if report.keyed else plain_link(previous)
    return report


def _check_keyed(
    report: AuditReport,
    chain: ChainKey | None,
    number: int,
    line: bytes,
    link: str,
    previous: bytes | None,
) -> None:
    continues = continues_of(line)
    if number == 1 and continues is not None:
        report.continues = continues.hex()
    if number > 1 and continues is not None:
        report.problems.append(
            f"line {number}: starts a file, but is not the first line (it was copied from "
            "another file)"
        )
        return
    if chain is None:
        return
    if link != _expected(chain, line, previous):
        if previous is None:
            report.problems.append(
                "line 1: does not start a chain under this store's audit key (the start "
                "of the file was cut, or the file belongs to another store)"
            )
        else:
            report.problems.append(
                f"line {number}: does not follow the line before it (a line before it was "
                "edited, inserted or removed)"
            )

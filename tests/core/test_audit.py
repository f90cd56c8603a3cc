"""The audit log: the lines Go setec writes and when, durability with group commit, and
the keyed chain that makes the file tamper-evident."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from setec_core import (
    AccessDenied,
    AuditError,
    ConfigError,
    Database,
    NotFound,
    Principal,
    ValueNotChanged,
    make_caller,
)
from setec_core.audit import (
    GENESIS,
    AuditEntry,
    AuditHead,
    AuditLog,
    FileAuditSink,
    Outcome,
    format_time,
    verify,
)
from setec_core.testing import SUPERUSER, FailingAuditSink, audit_entries, new_database

SU = SUPERUSER
ALICE = Principal(
    hostname="laptop.tail1234.ts.net.", ip="100.101.102.103", user="alice@example.com"
)


def entry(**kw: object) -> AuditEntry:
    """An entry for alice, with fields overridden by ``kw``."""
    base: dict[str, object] = {"principal": ALICE, "action": "get", "authorized": True}
    base.update(kw)
    return AuditEntry(**base)  # type: ignore[arg-type]


def test_ids_and_times_assigned(tmp_path: Path) -> None:
    """Every written entry has a non-zero id and a non-zero time."""
    log = AuditLog.open(tmp_path / "audit.log")
    log.write(entry(), entry(secret="x"))
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert len(lines) == 2
    assert all(isinstance(e["id"], int) and e["id"] > 0 for e in lines)
    assert lines[0]["id"] != lines[1]["id"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", e["time"]) for e in lines
    )


@pytest.mark.parametrize("outcome", list(Outcome))
def test_outcomes_are_written_as_their_values(outcome: Outcome) -> None:
    """An Outcome is written exactly as its string value would be (the log's bytes do
    not depend on which one a writer passed)."""
    as_enum = entry(secret="s", outcome=outcome)._body()
    as_text = entry(secret="s", outcome=outcome.value)._body()
    assert as_enum == as_text
    assert f',"outcome":"{outcome.value}"' in as_enum


def test_key_order_and_omissions(tmp_path: Path) -> None:
    """Go's keys in Go's order, secret and secretVersion omitted when
    empty, user or tags in the principal, then our own keys."""
    log = AuditLog.open(tmp_path / "audit.log")
    tagged = Principal(hostname="ci.tail1234.ts.net.", ip="100.64.0.9", tags=("tag:ci",))
    log.write(
        entry(secret="prod/db/password", secret_version=3, outcome="ok", served_version=3),
        AuditEntry(tagged, "info", True, outcome="ok"),
    )
    log.close()
    first, second = (json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines())
    assert list(first) == [
        "id",
        "time",
        "principal",
        "action",
        "authorized",
        "secret",
        "secretVersion",
        "outcome",
        "servedVersion",
        "prev",
    ]
    assert first["principal"] == {
        "hostname": "laptop.tail1234.ts.net.",
        "ip": "100.101.102.103",
        "user": "alice@example.com",
    }
    assert list(second) == ["id", "time", "principal", "action", "authorized", "outcome", "prev"]
    assert second["principal"] == {
        "hostname": "ci.tail1234.ts.net.",
        "ip": "100.64.0.9",
        "tags": ["tag:ci"],
    }


def test_entries_round_trip(tmp_path: Path) -> None:
    """Written entries decode back to what was written."""
    log = AuditLog.open(tmp_path / "audit.log")
    written = [entry(secret=f"s{i}", secret_version=i, authorized=i % 2 == 0) for i in range(1, 6)]
    log.write(*written)
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    for e, line in zip(written, lines, strict=True):
        assert (line["secret"], line["secretVersion"], line["authorized"], line["action"]) == (
            e.secret,
            e.secret_version,
            e.authorized,
            e.action,
        )


def test_format_time() -> None:
    """RFC 3339 in UTC with the fraction's trailing zeros trimmed, as Go does."""
    assert format_time(1714912496_123456789) == "2024-05-05T12:34:56.123456789Z"
    assert format_time(1714912496_120000000) == "2024-05-05T12:34:56.12Z"
    assert format_time(1714912496_000000000) == "2024-05-05T12:34:56Z"


def test_file_mode_0600(tmp_path: Path) -> None:
    """The log file is created with mode 0600, and a looser one is tightened."""
    path = tmp_path / "audit.log"
    AuditLog.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    AuditLog.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_close_syncs_then_closes_even_if_sync_fails() -> None:
    """Close calls sync and then close on the sink, even if sync fails."""
    sink = FailingAuditSink(fail_syncs=True)
    log = AuditLog(sink)
    with pytest.raises(AuditError, match="sync"):
        log.close()
    assert sink.closed


def test_chain_continues_across_reopen(tmp_path: Path) -> None:
    """Each line's prev is the hash of the line before, across restarts."""
    path = tmp_path / "audit.log"
    for _ in range(3):
        log = AuditLog.open(path)
        log.write(entry(), entry())
        log.close()
    report = verify(path)
    assert report.ok, report.problems
    assert report.entries == 6
    assert json.loads(path.read_text().splitlines()[0])["prev"] == GENESIS


def _six_lines(tmp_path: Path) -> Path:
    path = tmp_path / "audit.log"
    log = AuditLog.open(path)
    log.write(*(entry(secret=f"s{i}") for i in range(6)))
    log.close()
    return path


@pytest.mark.parametrize(
    ("tamper", "bad_line"),
    [
        (lambda lines: lines.__setitem__(2, lines[2].replace('"s2"', '"s9"')), 4),  # edit
        (lambda lines: lines.pop(3), 4),  # remove from the middle
        (lambda lines: lines.pop(0), 1),  # remove the first line
        (lambda lines: lines.insert(2, lines[2]), 4),  # duplicate a line
        (lambda lines: lines.__setitem__(1, lines[1].replace("true", "false")), 3),
    ],
    ids=["edit", "remove-middle", "remove-first", "duplicate", "flip-authorized"],
)
def test_verify_detects_tampering(tmp_path: Path, tamper: object, bad_line: int) -> None:
    """audit.verify names the first line whose chain link is broken."""
    path = _six_lines(tmp_path)
    assert verify(path).ok
    lines = path.read_text().splitlines()
    tamper(lines)  # type: ignore[operator]
    path.write_text("\n".join(lines) + "\n")
    report = verify(path)
    assert not report.ok
    assert report.problems[0].startswith(f"line {bad_line}:")


def test_verify_reports_garbage_line(tmp_path: Path) -> None:
    """A line that is not JSON is reported."""
    path = _six_lines(tmp_path)
    with path.open("a") as f:
        f.write("not json\n")
    assert any("not a JSON object" in p for p in verify(path).problems)


def test_torn_last_line_is_cut_at_open(tmp_path: Path) -> None:
    """A partial last line (crash mid-write) is removed at open; the chain stays valid."""
    path = _six_lines(tmp_path)
    with path.open("ab") as f:
        f.write(b'{"id":1,"time":"2024')
    log = AuditLog.open(path)
    log.write(entry(secret="after"))
    log.close()
    report = verify(path)
    assert report.ok, report.problems
    assert report.entries == 7


def test_log_is_locked_against_a_second_writer(tmp_path: Path) -> None:
    """Two writers on one log would interleave lines: the second open is refused."""
    path = tmp_path / "audit.log"
    first = AuditLog.open(path)
    with pytest.raises(ConfigError, match="in use"):
        FileAuditSink(path)
    first.close()
    AuditLog.open(path).close()


def test_a_sink_that_cannot_be_restored_keeps_its_path_out_of_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file sink whose failed write cannot be cut off again refuses with a reason
    that names no path (the reason is also /healthz's, which needs no identity); the
    path goes to the server's log."""
    path = tmp_path / "private-dir-4f2a" / "audit.log"
    path.parent.mkdir()
    sink = FileAuditSink(path)
    # Swap the sink's descriptor for a read-only one: the write fails, and so does the
    # truncation that would restore the file.
    read_only = os.open(path, os.O_RDONLY)
    os.dup2(read_only, sink._fd)
    os.close(read_only)
    with pytest.raises(AuditError) as caught:
        sink.write(b"line\n")
    sink.close()
    assert "private-dir-4f2a" not in str(caught.value)
    assert str(caught.value).startswith("the audit log failed a write and could not be restored")
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_write_failure_refuses_and_log_recovers() -> None:
    """A failed write raises AuditError and keeps nothing; later writes work again."""
    sink = FailingAuditSink(fail_writes=True)
    log = AuditLog(sink)
    with pytest.raises(AuditError, match="cannot write"):
        log.write(entry())
    sink.fail_writes = False
    log.write(entry(secret="next"))
    assert [e["secret"] for e in sink.entries()] == ["next"]
    assert sink.entries()[0]["prev"] == GENESIS


def test_sync_failure_breaks_the_log_for_good() -> None:
    """After a failed fsync every later write is refused (fail-closed)."""
    sink = FailingAuditSink(fail_syncs=True)
    log = AuditLog(sink)
    with pytest.raises(AuditError, match="synced"):
        log.write(entry())
    sink.fail_syncs = False
    with pytest.raises(AuditError, match="restarted"):
        log.write(entry())


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """Concurrent writers share fsyncs: 16 threads x 50 entries take far fewer syncs
    than entries, and every entry is in the (valid) chain."""
    log = AuditLog.open(tmp_path / "audit.log")

    class SlowSyncSink(FileAuditSink):
        """Makes each sync take long enough for other writers to pile up."""

        def sync(self) -> None:
            threading.Event().wait(0.002)
            super().sync()

    log.close()
    log = AuditLog(SlowSyncSink(tmp_path / "audit.log"))
    barrier = threading.Barrier(16)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(50):
            log.write(entry(secret=f"{n}/{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert log.entries_written == 800
    assert log.fsyncs < 400
    report = verify(tmp_path / "audit.log")
    assert report.ok
    assert report.entries == 800


class SlowFlakySink(FileAuditSink):
    """A file sink whose syncs are slow enough for writers to pile up, and whose
    ``fail_write_number``-th write fails as a full disk would."""

    def __init__(self, path: Path, fail_write_number: int = 0) -> None:
        super().__init__(path)
        self.writes = 0
        self.fail_write_number = fail_write_number

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes == self.fail_write_number:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(data)

    def sync(self) -> None:
        threading.Event().wait(0.002)
        super().sync()


def logged_secrets(path: Path) -> list[str]:
    """The ``secret`` of every line in the audit log at ``path``."""
    return [json.loads(line)["secret"] for line in path.read_bytes().splitlines()]


def run_writers(log: AuditLog, threads: int, per_thread: int) -> tuple[list[str], list[str]]:
    """Write from ``threads`` threads at once; return the secrets whose writes returned
    and the messages of those that raised."""
    done: list[str] = []
    failed: list[str] = []
    barrier = threading.Barrier(threads)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            try:
                log.write(entry(secret=f"{n}/{i}"))
                done.append(f"{n}/{i}")
            except AuditError as e:
                failed.append(str(e))

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
        assert not w.is_alive(), "a writer hung"
    return done, failed


def test_failed_batch_write_refuses_only_that_batch(tmp_path: Path) -> None:
    """When the write of one group-commit batch fails, every writer in that batch is
    refused, the others succeed, and the file holds exactly the successful lines in one
    valid chain."""
    log = AuditLog(SlowFlakySink(tmp_path / "audit.log", fail_write_number=5))
    done, failed = run_writers(log, threads=8, per_thread=20)
    log.close()
    assert failed, "the failing write refused nobody"
    assert all("No space left" in msg for msg in failed)
    assert len(done) + len(failed) == 160
    report = verify(tmp_path / "audit.log")
    assert report.ok
    written = logged_secrets(tmp_path / "audit.log")
    assert sorted(written) == sorted(done)


def test_close_syncs_parked_writers_then_refuses(tmp_path: Path) -> None:
    """Closing while writers are parked in group commit neither hangs nor loses a line
    whose write returned; writes after the close are refused."""
    log = AuditLog(SlowFlakySink(tmp_path / "audit.log"))
    closer = threading.Timer(0.05, log.close)
    closer.start()
    done, failed = run_writers(log, threads=8, per_thread=200)
    closer.join()
    assert done, "nothing was written before the close"
    assert failed, "the close refused no write"
    assert all("closed" in msg for msg in failed)
    report = verify(tmp_path / "audit.log")
    assert report.ok
    written = logged_secrets(tmp_path / "audit.log")
    assert set(done) <= set(written)


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or MemoryError arriving in the middle of a write."""


class InterruptedSink(SlowFlakySink):
    """A file sink whose ``interrupt_write_number``-th write raises :class:`Interrupted`."""

    def __init__(self, path: Path, interrupt_write_number: int) -> None:
        super().__init__(path)
        self.interrupt_write_number = interrupt_write_number

    def write(self, data: bytes) -> None:
        if self.writes + 1 == self.interrupt_write_number:
            self.writes += 1
            raise Interrupted
        super().write(data)


def test_unexpected_exception_in_a_write_strands_nobody(tmp_path: Path) -> None:
    """A BaseException in the baton holder's write reaches that writer; every parked or
    later writer is refused instead of waiting forever, and close() returns."""
    log = AuditLog(InterruptedSink(tmp_path / "audit.log", interrupt_write_number=3))
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(50):
            try:
                log.write(entry(secret=f"{n}/{i}"))
                outcomes.append("ok")
            except AuditError as e:
                outcomes.append(str(e))
            except Interrupted:
                outcomes.append("interrupted")

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
        assert not w.is_alive(), "a writer hung"
    assert outcomes.count("interrupted") == 1
    refused = [o for o in outcomes if o not in ("ok", "interrupted")]
    assert refused
    assert all("failed unexpectedly (Interrupted)" in o for o in refused)
    assert "failed unexpectedly" in log.failure
    closer = threading.Thread(target=log.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), "close() hung"
    assert verify(tmp_path / "audit.log").ok


def test_lone_surrogate_in_an_entry_is_escaped_not_fatal(tmp_path: Path) -> None:
    """A library caller's principal holding a lone surrogate (no UTF-8 form) is written
    with JSON escapes; the log stays valid and keeps working."""
    log = AuditLog(FileAuditSink(tmp_path / "audit.log"))
    log.write(AuditEntry(Principal(user="bad\udc80user"), "get", True, "x"))
    log.write(entry(secret="after"))
    log.close()
    lines = (tmp_path / "audit.log").read_bytes().splitlines()
    assert b"\\udc80" in lines[0]
    assert json.loads(lines[0])["principal"]["user"] == "bad\udc80user"
    assert json.loads(lines[1])["secret"] == "after"
    assert verify(tmp_path / "audit.log").ok


# --- what the Database writes (docs/api.md §7.2) --------------------------------


def test_database_audit_table(db: Database) -> None:
    """Which entry each operation writes, with secretVersion as Go sets it, plus
    our outcome and servedVersion."""
    db.put(SU, "s", b"a")  # put, version not recorded
    db.put(SU, "s", b"b")
    db.get(SU, "s")  # get active: secretVersion 0
    db.get(SU, "s", 2)  # explicit: requested version
    db.info(SU, "s")
    db.activate(SU, "s", 2)
    db.create_version(SU, "s", 7, b"c")
    db.delete_version(SU, "s", 1)
    db.delete(SU, "s")
    db.list(SU)
    got = [
        (e["action"], e.get("secret"), e.get("secretVersion"), e["outcome"], e.get("servedVersion"))
        for e in audit_entries(db)
    ]
    assert got == [
        ("put", "s", None, "ok", None),
        ("put", "s", None, "ok", None),
        ("get", "s", None, "ok", 1),
        ("get", "s", 2, "ok", 2),
        ("info", "s", None, "ok", None),
        ("activate", "s", 2, "ok", None),
        ("create-version", "s", 7, "ok", None),
        ("delete", "s", 1, "ok", None),
        ("delete", "s", None, "ok", None),
        ("info", None, None, "ok", None),
    ]
    assert all(
        e["principal"] == {"hostname": "mcp", "ip": "1.2.3.4", "user": "flynn"}
        for e in audit_entries(db)
    )


def test_conditional_get_audit(db: Database) -> None:
    """A conditional get writes nothing when unchanged or missing, one denied entry
    when denied, and one entry (secretVersion 0) when it returns a value."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    n = len(audit_entries(db))
    with pytest.raises(ValueNotChanged):
        db.get_if_changed(SU, "s", 1)
    with pytest.raises(NotFound):
        db.get_if_changed(SU, "missing", 1)
    assert len(audit_entries(db)) == n
    with pytest.raises(AccessDenied):
        db.get_if_changed(make_caller(), "s", 1)
    db.activate(SU, "s", 2)
    db.get_if_changed(SU, "s", 1)
    denied, _activate, served = audit_entries(db)[n:]
    assert (denied["authorized"], denied["outcome"], "secretVersion" in denied) == (
        False,
        "denied",
        False,
    )
    assert (served["authorized"], served["servedVersion"], "secretVersion" in served) == (
        True,
        2,
        False,
    )


def test_list_audit_for_caller_without_rules(db: Database) -> None:
    """List writes one info entry, authorized, no secret, even with no rules."""
    db.put(SU, "s", b"a")
    db.list(make_caller(user="nobody@example.com"))
    last = audit_entries(db)[-1]
    assert (last["action"], last["authorized"], "secret" in last) == ("info", True, False)
    assert last["principal"]["user"] == "nobody@example.com"


def test_denied_and_missing_are_audited(db: Database) -> None:
    """Attempts are recorded: a denied get and a permitted get of a missing secret."""
    with pytest.raises(AccessDenied):
        db.get(make_caller(), "s")
    with pytest.raises(NotFound):
        db.get(SU, "s")
    denied, missing = audit_entries(db)
    assert (denied["authorized"], denied["outcome"]) == (False, "denied")
    assert (missing["authorized"], missing["outcome"]) == (True, "not-found")


def test_request_id_is_recorded() -> None:
    """A caller's request id is copied into its audit entries."""
    from dataclasses import replace

    with new_database() as db:
        db.put(replace(SU, request_id="req-42"), "s", b"a")
        assert audit_entries(db)[-1]["request"] == "req-42"


def test_audit_failure_refuses_reads_and_writes() -> None:
    """Fail-closed: when the audit log cannot be written, a get returns nothing and a
    put changes nothing."""
    sink = FailingAuditSink()
    with new_database(audit_sink=sink) as db:
        db.put(SU, "s", b"secret-value-1")
        sink.fail_writes = True
        with pytest.raises(AuditError):
            db.get(SU, "s")
        with pytest.raises(AuditError):
            db.put(SU, "s", b"secret-value-2")
        with pytest.raises(AuditError):
            db.list(SU)
        sink.fail_writes = False
        assert db.info(SU, "s").versions == (1,)


def test_audit_never_contains_values(tmp_path: Path) -> None:
    """No audit line carries a secret value, whatever the operation."""
    with Database.open(tmp_path / "state", key="dev://") as db:
        db.put(SU, "s", b"hunter2-audit-leak")
        db.create_version(SU, "s", 9, b"swordfish-audit-leak")
        db.get(SU, "s")
        db.get(SU, "s", 1)
        db.get_if_changed(SU, "s", 1)
    text = (tmp_path / "state" / "audit.log").read_text()
    assert "hunter2" not in text
    assert "swordfish" not in text
    assert os.path.getsize(tmp_path / "state" / "audit.log") > 0


# --- the keyed chain ---------------------------------------------------------------------

AUDIT_KEY = bytes(range(32))


def _keyed_lines(tmp_path: Path, count: int = 6) -> tuple[Path, AuditHead]:
    """A keyed log of ``count`` lines and its durable head."""
    path = tmp_path / "audit.log"
    log = AuditLog.open(path, AUDIT_KEY)
    log.write(*(entry(secret=f"s{i}") for i in range(count)))
    head = log.durable_head
    log.close()
    assert head is not None
    return path, head


def test_keyed_chain_verifies_with_its_key(tmp_path: Path) -> None:
    """Keyed lines carry an HMAC link; verify with the key checks every one, and the
    durable head is the last line's byte range and link."""
    path, head = _keyed_lines(tmp_path)
    lines = path.read_bytes().splitlines()
    assert all(json.loads(x)["prev"].startswith("hmac-sha256:") for x in lines)
    report = verify(path, AUDIT_KEY, recorded=head)
    assert report.ok, report.problems
    assert (report.entries, report.keyed, report.plain, report.checked) == (6, 6, 0, True)
    assert report.recorded_line == 6
    assert (head.start, head.end) == (path.stat().st_size - len(lines[-1]) - 1, path.stat().st_size)
    assert not verify(path, bytes(32)).ok  # another key: nothing links


def test_keyed_chain_without_the_key_is_checked_for_form_only(tmp_path: Path) -> None:
    """Without the key, verify cannot check keyed links and says so (checked False)."""
    path, _ = _keyed_lines(tmp_path)
    report = verify(path)
    assert report.ok
    assert (report.keyed, report.checked, report.head) == (6, False, "")


def test_rewritten_suffix_with_recomputed_hashes_fails(tmp_path: Path) -> None:
    """A suffix rewritten with plain SHA-256 links recomputed (which the unkeyed chain
    accepted) is found, at the first rewritten line."""
    path, _ = _keyed_lines(tmp_path)
    lines = path.read_bytes().splitlines()
    for i in range(3, 6):
        doc = json.loads(lines[i])
        doc["authorized"] = False
        doc["prev"] = hashlib.sha256(lines[i - 1]).hexdigest()
        lines[i] = json.dumps(doc, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = verify(path, AUDIT_KEY)
    assert report.problems[0].startswith("line 4:")
    assert "plain SHA-256 link after keyed lines" in report.problems[0]


def test_lines_cut_from_the_end_fail_against_the_recorded_head(tmp_path: Path) -> None:
    """Cutting lines off the end leaves a chain that links, but not the head the store
    recorded."""
    path, head = _keyed_lines(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    assert verify(path, AUDIT_KEY).ok
    report = verify(path, AUDIT_KEY, recorded=head)
    assert not report.ok
    assert "ends before the entry the store recorded" in report.problems[0]


@pytest.mark.parametrize(
    ("tamper", "bad_line"),
    [
        (lambda lines: lines.__setitem__(2, lines[2].replace(b'"s2"', b'"s9"')), 4),
        (lambda lines: lines.pop(3), 4),
        (lambda lines: lines.pop(0), 1),  # the start of the file cut
        (lambda lines: lines.insert(3, lines[0]), 4),  # a start line copied into the middle
        (lambda lines: lines.insert(2, lines[2]), 4),
    ],
    ids=["edit", "remove-middle", "remove-first", "start-line-copied", "duplicate"],
)
def test_keyed_verify_detects_tampering(tmp_path: Path, tamper: object, bad_line: int) -> None:
    """verify with the key names the first line whose keyed link is broken."""
    path, _ = _keyed_lines(tmp_path)
    lines = path.read_bytes().splitlines()
    tamper(lines)  # type: ignore[operator]
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = verify(path, AUDIT_KEY)
    assert not report.ok
    assert report.problems[0].startswith(f"line {bad_line}:"), report.problems


def test_an_older_log_continues_keyed(tmp_path: Path) -> None:
    """A log written before keying (plain links) keeps working: the chain is keyed from
    the first new line, which vouches for the plain lines before it."""
    path = tmp_path / "audit.log"
    legacy = AuditLog.open(path)
    legacy.write(entry(secret="old1"), entry(secret="old2"))
    legacy.close()
    log = AuditLog.open(path, AUDIT_KEY)
    log.write(entry(secret="new"))
    log.close()
    report = verify(path, AUDIT_KEY)
    assert report.ok, report.problems
    assert (report.plain, report.keyed) == (2, 1)
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1].replace(b"old2", b"old9")  # the last plain line, edited
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert verify(path, AUDIT_KEY).problems[0].startswith("line 3:")


def test_a_log_without_its_key_refuses_to_continue_keyed_lines(tmp_path: Path) -> None:
    """Nobody may append plain lines after keyed ones: a log opened without its key
    refuses to write, and verify flags such lines."""
    path, _ = _keyed_lines(tmp_path)
    log = AuditLog.open(path)
    assert log.ends_keyed
    with pytest.raises(AuditError, match="keyed"):
        log.write(entry())
    log.close()
    last = path.read_bytes().splitlines()[-1]
    forged = json.loads(last)
    forged["prev"] = hashlib.sha256(last).hexdigest()
    with path.open("ab") as f:
        f.write(json.dumps(forged, separators=(",", ":")).encode() + b"\n")
    report = verify(path, AUDIT_KEY)
    assert report.problems == [
        "line 7: has a plain SHA-256 link after keyed lines (from line 1): it was added "
        "by a writer without the audit key"
    ]


def test_a_new_file_continues_an_older_one(tmp_path: Path) -> None:
    """A file that continues an earlier one names, on its first line, the link it
    continues from; its first line is checked against it."""
    old, _ = _keyed_lines(tmp_path)
    old_head = verify(old, AUDIT_KEY).head
    new = tmp_path / "audit.new"
    log = AuditLog(FileAuditSink(new), AUDIT_KEY, continues=bytes.fromhex(old_head[12:]))
    log.write(entry(secret="first"), entry(secret="second"))
    log.close()
    first = json.loads(new.read_bytes().splitlines()[0])
    assert first["continues"] == old_head[12:]
    report = verify(new, AUDIT_KEY)
    assert report.ok, report.problems
    assert f"hmac-sha256:{report.continues}" == old_head


def test_keyed_group_commit_keeps_one_chain(tmp_path: Path) -> None:
    """Concurrent writers on a keyed log share fsyncs and leave one valid keyed chain
    whose head is the file's last line."""
    log = AuditLog(SlowFlakySink(tmp_path / "audit.log"), AUDIT_KEY)
    log.claim_commits(7)
    done, failed = run_writers(log, threads=8, per_thread=25)
    head = log.durable_head
    log.close()
    assert not failed
    assert len(done) == 200
    assert log.fsyncs < 200
    report = verify(tmp_path / "audit.log", AUDIT_KEY, recorded=head, commits=7)
    assert report.ok, report.problems
    assert report.recorded_line == 200
    assert all(
        json.loads(x)["commits"] == 7 for x in (tmp_path / "audit.log").read_bytes().splitlines()
    )


def test_key_never_in_repr() -> None:
    """Neither the log nor its chain key shows the key in a repr."""
    from setec_core.audit_chain import ChainKey

    assert AUDIT_KEY.hex() not in repr(ChainKey(AUDIT_KEY))
    assert "redacted" in repr(ChainKey(AUDIT_KEY))


def test_verify_checks_commit_claims_from_the_recorded_head_on(tmp_path: Path) -> None:
    """A line after the recorded head claiming more commits than the store records
    means the store was rolled back; lines before the head are not held to it."""
    path = tmp_path / "audit.log"
    log = AuditLog.open(path, AUDIT_KEY)
    log.claim_commits(9)
    log.write(entry(secret="before a restore"))
    log.claim_commits(3)
    log.write(entry(secret="the restore"))
    head = log.durable_head
    log.claim_commits(5)
    log.write(entry(secret="after"))
    log.close()
    assert head is not None
    report = verify(path, AUDIT_KEY, recorded=head, commits=4)
    assert report.problems == [
        "line 3: was written when the store had made 5 commits, but its integrity entry "
        "records 4: the store was rolled back"
    ]
    assert verify(path, AUDIT_KEY, recorded=head, commits=5).ok


@given(
    user=st.text(max_size=40),
    tags=st.lists(st.text(max_size=10), max_size=3),
    secret=st.text(max_size=40),
    version=st.integers(0, 2**32 - 1),
    authorized=st.booleans(),
    outcome=st.sampled_from(["", "ok", "denied"]),
    request_id=st.text(max_size=20),
)
def test_entry_body_is_json_dumps_of_the_entry(
    user: str,
    tags: list[str],
    secret: str,
    version: int,
    authorized: bool,
    outcome: str,
    request_id: str,
) -> None:
    """The body built by hand for speed is exactly what json.dumps of the entry's
    members gives (raw UTF-8, escapes only where JSON needs them, \\u for a lone
    surrogate), for any strings."""
    principal = Principal(hostname="h", ip="1.2.3.4", user=user, tags=tuple(tags))
    entry = AuditEntry(principal, "get", authorized, secret, version, outcome, version, request_id)
    doc: dict[str, object] = {
        "principal": principal.to_json(),
        "action": "get",
        "authorized": authorized,
    }
    for key, value in (
        ("secret", secret),
        ("secretVersion", version),
        ("outcome", outcome),
        ("servedVersion", version),
        ("request", request_id),
    ):
        if value:
            doc[key] = value
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(doc, separators=(",", ":"))
    body = entry._body()
    assert json.loads("{" + body + "}") == doc
    strings = user + secret + request_id + "".join(tags)
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in strings):
        assert body == text[1:-1]


def test_an_entry_stays_small_whatever_the_identity_claims() -> None:
    """An identity service or a header can claim a huge login or hundreds of tags: each
    string of an entry is cut at 1,024 characters and a principal keeps 64 tags, so one
    entry stays a few kilobytes (and says what was cut)."""
    huge = Principal(
        hostname="h" * 100_000, ip="1.2.3.4", tags=tuple(f"tag:{i}" for i in range(500))
    )
    body = AuditEntry(huge, "get", False, "s", request_id="r" * 5000)._body()
    assert len(body) < 8_000
    doc = json.loads("{" + body + "}")
    assert doc["principal"]["hostname"] == "h" * 1024 + "...[98976 more characters cut]"
    assert doc["principal"]["tags"][:2] == ["tag:0", "tag:1"]
    assert doc["principal"]["tags"][-1] == "...[436 more tags cut]"
    assert len(doc["principal"]["tags"]) == 65
    assert doc["request"].startswith("r" * 1024 + "...[")


def test_deferred_writes_return_at_once_and_report_when_durable() -> None:
    """Inside deferred(), write() returns once the entry is stamped; the flusher thread
    syncs it and then calls the Deferral back, with no failure."""
    sink = FailingAuditSink()
    sink.gate.clear()
    log = AuditLog(sink)
    told: list[str] = []
    with log.deferred() as deferral:
        log.write(AuditEntry(ALICE, "get", True, "s"))
    assert deferral.pending
    deferral.then(told.append)
    assert told == []
    sink.gate.set()
    deadline = time.monotonic() + 5
    while not told and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told == [""]
    assert not deferral.pending
    assert [e["secret"] for e in sink.entries()] == ["s"]
    log.write(AuditEntry(ALICE, "get", True, "t"))  # outside deferred(): durable on return
    assert sink.syncs == 2
    log.close()


def test_a_deferred_write_that_cannot_be_synced_is_reported() -> None:
    """Fail-closed for deferred writes too: a failed fsync reaches the Deferral as a
    reason, and the log refuses every later write."""
    sink = FailingAuditSink(fail_syncs=True)
    sink.gate.clear()
    log = AuditLog(sink)
    told: list[str] = []
    with log.deferred() as deferral:
        log.write(AuditEntry(ALICE, "get", True, "s"))
    deferral.then(told.append)
    sink.gate.set()
    deadline = time.monotonic() + 5
    while not told and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(told) == 1
    assert "could not be synced" in told[0]
    with pytest.raises(AuditError):
        log.write(AuditEntry(ALICE, "get", True, "t"))


def test_deferred_and_waiting_writers_share_fsyncs(tmp_path: Path) -> None:
    """Many deferred writers and a waiting one: every entry is written once, in one
    chain, every deferral is told, and fsyncs are shared."""
    log = AuditLog.open(tmp_path / "audit.log")
    told: list[str] = []
    lock = threading.Lock()

    def deferred_worker(n: int) -> None:
        for i in range(50):
            with log.deferred() as deferral:
                log.write(AuditEntry(ALICE, "get", True, f"d{n}-{i}"))
            deferral.then(lambda failure: (lock.acquire(), told.append(failure), lock.release()))

    def waiting_worker() -> None:
        for i in range(50):
            log.write(AuditEntry(ALICE, "put", True, f"w{i}"))

    threads = [threading.Thread(target=deferred_worker, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=waiting_worker))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while len(told) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told == [""] * 200
    fsyncs = log.fsyncs
    log.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 250
    assert len({json.loads(line)["secret"] for line in lines}) == 250
    assert fsyncs < 250
    assert verify(tmp_path / "audit.log").ok

"""Secret descriptions at the Database layer (docs/api.md §9.5): ``set_info``, its
rules, its audit entries, and how descriptions are kept (encrypted in the record)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from setec_core import (
    AccessDenied,
    Database,
    InvalidRequestError,
    NotFound,
    SecretInfo,
    make_caller,
)
from setec_core.description import MAX_DESCRIPTION_BYTES, check_description
from setec_core.maintenance import rotate_dek
from setec_core.model import SecretState
from setec_core.plugins import Plugins
from setec_core.testing import SUPERUSER, audit_entries

SU = SUPERUSER
KEY = "dev://"
# Not a secret value, but metadata that must not leak either: searched for in files
# and logs below.
DESCRIPTION = "Payroll DB password, owned by team-finance (rotate quarterly)"


def test_set_info_sets_and_clears_without_a_version(db: Database) -> None:
    """A description is shown by info and list; setting it makes no version and leaves
    the active version; an empty one clears it."""
    db.put(SU, "a", b"1")
    db.put(SU, "a", b"2")
    db.set_info(SU, "a", DESCRIPTION)
    assert db.info(SU, "a") == SecretInfo("a", (1, 2), 1, DESCRIPTION)
    assert db.list(SU) == [SecretInfo("a", (1, 2), 1, DESCRIPTION)]
    assert db.get(SU, "a").version == 1
    db.set_info(SU, "a", "")
    assert db.info(SU, "a") == SecretInfo("a", (1, 2), 1)


def test_later_writes_keep_the_description(db: Database) -> None:
    """put, create-version, activate and delete-version carry the description over."""
    db.put(SU, "a", b"1")
    db.set_info(SU, "a", DESCRIPTION)
    db.put(SU, "a", b"2")
    db.create_version(SU, "a", 7, b"7")
    db.activate(SU, "a", 2)
    db.delete_version(SU, "a", 1)
    assert db.info(SU, "a") == SecretInfo("a", (2, 7), 2, DESCRIPTION)


def test_set_info_needs_its_own_right(db: Database) -> None:
    """set-info is a right of its own: put, info or every Go action do not grant it,
    and it grants nothing else. A refusal is audited."""
    db.put(SU, "team/a", b"1")
    go_actions = ["get", "info", "put", "create-version", "activate", "delete"]
    with pytest.raises(AccessDenied):
        db.set_info(make_caller((go_actions, ["*"])), "team/a", DESCRIPTION)
    writer = make_caller((["set-info"], ["team/*"]))
    db.set_info(writer, "team/a", DESCRIPTION)
    with pytest.raises(AccessDenied):
        db.info(writer, "team/a")
    assert db.info(SU, "team/a").description == DESCRIPTION
    outcomes = [
        (e["outcome"], e["authorized"]) for e in audit_entries(db) if e["action"] == "set-info"
    ]
    assert outcomes == [("denied", False), ("ok", True)]


def test_set_info_audits_the_length_never_the_text(db: Database) -> None:
    """Every set-info entry carries descriptionBytes (0 when cleared, the UTF-8 length)
    and an outcome; the description's text is in no entry."""
    db.put(SU, "a", b"1")
    db.set_info(SU, "a", "café ☕")
    db.set_info(SU, "a", "café ☕")
    db.set_info(SU, "a", "")
    with pytest.raises(NotFound):
        db.set_info(SU, "missing", DESCRIPTION)
    entries = [e for e in audit_entries(db) if e["action"] == "set-info"]
    assert [(e["secret"], e["outcome"], e["descriptionBytes"]) for e in entries] == [
        ("a", "ok", 9),
        ("a", "unchanged", 9),
        ("a", "ok", 0),
        ("missing", "not-found", len(DESCRIPTION)),
    ]
    text = json.dumps(audit_entries(db), ensure_ascii=False)
    assert "café" not in text
    assert DESCRIPTION not in text


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("x" * (MAX_DESCRIPTION_BYTES + 1), "is 1001 bytes long; descriptions are at most 1000"),
        ("é" * 501, "is 1002 bytes long"),
        ("two\nlines", "U+000A, a control character or line break, at character 4"),
        ("tab\there", "U+0009"),
        ("bell\x07", "U+0007"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("line\u2028separator", "U+2028"),
        ("\ud800", "not valid Unicode"),
    ],
)
def test_descriptions_that_are_refused(db: Database, description: str, reason: str) -> None:
    """A description over 1,000 bytes of UTF-8, or holding a control character or a
    line break, is refused with a reason that does not quote it, before the rules are
    asked and without an audit entry."""
    db.put(SU, "a", b"1")
    before = len(audit_entries(db))
    with pytest.raises(InvalidRequestError, match=re.escape(reason)) as refused:
        db.set_info(make_caller(), "a", description)
    assert description not in str(refused.value)
    assert len(audit_entries(db)) == before
    assert db.info(SU, "a").description == ""


def test_descriptions_that_are_accepted() -> None:
    """Exactly 1,000 bytes, any printable text (quotes, HTML, emoji, right-to-left
    scripts) and the empty string are descriptions."""
    for text in ("x" * 1000, "é" * 500, '<b>"quoted"</b> & 🙂 שלום', " spaced ", ""):
        assert check_description(text) == text


def test_reserved_empty_and_missing_names(db: Database) -> None:
    """An ``_internal/`` name is 400 (audited as invalid), an empty name 400 (not
    audited), a missing secret 404 (audited as not-found), as other writes."""
    with pytest.raises(InvalidRequestError, match="reserved"):
        db.set_info(SU, "_internal/x", "d")
    with pytest.raises(InvalidRequestError, match="must not be empty"):
        db.set_info(SU, "", "d")
    with pytest.raises(NotFound):
        db.set_info(SU, "nope", "d")
    outcomes = [e["outcome"] for e in audit_entries(db) if e["action"] == "set-info"]
    assert outcomes == ["invalid", "not-found"]


def test_description_survives_restart_encrypted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A description is read back after a restart, and appears in neither the SQLite
    file (it is inside the record's ciphertext) nor the audit log nor any log line."""
    caplog.set_level(logging.DEBUG)
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "app/db", b"v")
        db.set_info(SU, "app/db", DESCRIPTION)
    with Database.open(tmp_path, key=KEY) as db:
        assert db.info(SU, "app/db").description == DESCRIPTION
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert DESCRIPTION.encode() not in data, path.name
        assert b"Payroll" not in data, path.name
    assert "Payroll" not in caplog.text


def test_records_without_a_description_decode_as_before() -> None:
    """A record plaintext written before descriptions existed decodes with none, and a
    secret without one encodes to exactly the bytes it did."""
    old = b'{"name":"a","versions":{"1":"eA=="},"active":1,"latest":1}'
    state = SecretState.decode(old, 3)
    assert (state.name, state.description, state.info()) == ("a", "", SecretInfo("a", (1,), 1))
    assert state.encode() == old
    described = SecretState.decode(old[:-1] + b',"description":"d \\u00e9"}', 3)
    assert described.description == "d é"
    assert SecretState.decode(described.encode(), 3) == described


def test_rotate_dek_keeps_descriptions_and_last_access(tmp_path: Path) -> None:
    """rotate-dek re-encrypts descriptions with their records, and re-seals the stored
    last-access times under the new data key."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "a", b"v")
        db.set_info(SU, "a", DESCRIPTION)
        accessed = db.info(SU, "a").last_access
    plugins = Plugins.load()
    storage = plugins.storage(f"sqlite://{tmp_path / 'secrets.db'}")
    try:
        rotate_dek(storage, key=plugins.key_provider(KEY))
    finally:
        storage.close()
    with Database.open(tmp_path, key=KEY) as db:
        info = db.info(SU, "a")
    assert (info.description, info.last_access) == (DESCRIPTION, accessed)
    assert accessed is not None

"""The helpers setec_core.storage gives storage backends (docs/plugins.md): the
duplicate check and the compare-and-swap of a commit."""

from __future__ import annotations

import pytest

from setec_core.errors import ConflictError, StorageError
from setec_core.storage import MetaWrite, RecordWrite, check_expected, check_unique

STORED = {b"a" * 20: 3}
META = {"dek": b"wrapped"}


def check(writes: list[RecordWrite], meta: list[MetaWrite]) -> list[object]:
    """check_expected against STORED and META; return what it asked, in order."""
    asked: list[object] = []

    def revision_of(key: bytes) -> int:
        asked.append(key)
        return STORED.get(key, 0)

    def meta_of(name: str) -> bytes | None:
        asked.append(name)
        return META.get(name)

    check_expected(writes, meta, revision_of=revision_of, meta_of=meta_of)
    return asked


def test_check_unique_passes_distinct_writes() -> None:
    """Distinct keys and names pass, whatever their values."""
    check_unique([RecordWrite(b"k1", b"x", 0), RecordWrite(b"k2", None, 4)], [])
    check_unique([], [MetaWrite("a", b"1", None), MetaWrite("b", b"1", None)])


def test_check_unique_names_the_key_written_twice() -> None:
    """A key written twice is a StorageError naming the start of its hex, not its data."""
    key = bytes(range(20))
    with pytest.raises(
        StorageError, match=r"each record once, but 0001020304050607\.\.\. is written twice"
    ):
        check_unique([RecordWrite(key, b"first", 0), RecordWrite(key, b"second", 0)], [])


def test_check_unique_names_the_meta_written_twice() -> None:
    """A metadata name written twice is a StorageError naming it."""
    with pytest.raises(StorageError, match="each meta entry once, but 'dek' is written twice"):
        check_unique([], [MetaWrite("dek", b"1", None), MetaWrite("dek", b"2", None)])


def test_check_expected_passes_when_everything_matches() -> None:
    """Matching expectations pass, and every write is checked, records first."""
    asked = check(
        [RecordWrite(b"a" * 20, b"x", 3), RecordWrite(b"new", b"y", 0)],
        [MetaWrite("dek", b"rewrapped", b"wrapped"), MetaWrite("fresh", b"1", None)],
    )
    assert asked == [b"a" * 20, b"new", "dek", "fresh"]


@pytest.mark.parametrize(
    ("writes", "meta", "message"),
    [
        (
            [RecordWrite(b"a" * 20, b"x", 2)],
            [],
            r"record 6161616161616161\.\.\. was changed by another writer: "
            r"expected revision 2, found 3",
        ),
        (
            [RecordWrite(b"gone", None, 1)],
            [],
            r"expected revision 1, found 0",
        ),
        (
            [],
            [MetaWrite("dek", b"v", None)],
            r"meta entry 'dek' was changed by another writer: found a different value",
        ),
        (
            [],
            [MetaWrite("absent", b"v", b"old")],
            r"meta entry 'absent' was changed by another writer: found absent",
        ),
    ],
)
def test_check_expected_refuses_a_mismatch(
    writes: list[RecordWrite], meta: list[MetaWrite], message: str
) -> None:
    """A write whose expectation does not match is a ConflictError saying what was
    found, never a value."""
    with pytest.raises(ConflictError, match=message) as info:
        check(writes, meta)
    assert "wrapped" not in str(info.value)

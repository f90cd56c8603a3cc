"""The contract every :class:`~setec_core.backup.BackupSink` must meet, as pytest tests.

Subclass :class:`BackupSinkContract` in a test module (the class name starting with
``Test``) and override the ``sink`` fixture to return a new, empty sink; override
``reopen`` if a second sink on the same backups is not built by
``type(sink).from_uri(sink.uri)``::

    class TestMySink(BackupSinkContract):
        @pytest.fixture
        def sink(self, tmp_path):
            s = MySink.from_uri(f"my://{tmp_path}/backups")
            yield s
            s.close()

The tests use only the :class:`~setec_core.backup.BackupSink` interface.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from setec_core.backup import BackupSink
from setec_core.errors import NotFound, StorageError

Reopen = Callable[[BackupSink], BackupSink]

NAME = "2026/11/23/db-2026-11-23T10:54:35.123Z.json"
"""A backup name shaped like the ones the core makes."""

NAMES = [
    "2026/11/23/db-2026-11-23T10:54:35.123Z.json",
    "2026/11/23/db-2026-11-23T10:55:35.001Z.json",
    "2026/11/24/db-2026-11-24T00:00:00.000Z.json",
    "2026/12/01/db-2026-12-01T09:03:04.500Z.json",
    "2027/01/01/db-2027-01-01T00:00:00.000Z.json",
    "top-level.bin",
    "a/b/c/d/e/deep_name-1.2:3",
]
"""Names for the listing tests: nested to several depths, one at the top."""

BAD_NAMES = [
    "",
    "../x",
    "a/../b",
    "a/./b",
    ".",
    "..",
    "/abs",
    "a//b",
    "trailing/",
    "back\\slash",
    "sp ace",
    "new\nline",
    "nul\0",
    "caf\u00e9",
    "a?b",
    "a*b",
    "x" * 1001,
]
"""Names every sink refuses with StorageError."""


class BackupSinkContract:
    """Put/get round trips, heads, sorted listing and stamps, no replacement,
    deletion, name checks and persistence across sink instances."""

    @pytest.fixture
    def sink(self) -> BackupSink:
        """Return the sink under test, holding no backups. Override this fixture."""
        raise NotImplementedError("override the 'sink' fixture")

    @pytest.fixture
    def reopen(self) -> Iterator[Reopen]:
        """Return a function building a second sink on the same backups as its
        argument; the default is ``type(sink).from_uri(sink.uri)``. The sinks it builds
        are closed after the test."""
        opened: list[BackupSink] = []

        def reopen(sink: BackupSink) -> BackupSink:
            again = type(sink).from_uri(sink.uri)
            opened.append(again)
            return again

        yield reopen
        for s in opened:
            s.close()

    @pytest.mark.parametrize("size", [0, 1, 1000, 1 << 20])
    def test_round_trip(self, sink: BackupSink, size: int) -> None:
        """A blob (empty, small, or 1 MiB of random bytes) reads back byte for byte."""
        data = os.urandom(size)
        sink.put(NAME, data)
        assert sink.get(NAME) == data

    def test_every_byte_value_survives(self, sink: BackupSink) -> None:
        """Blobs are opaque: all 256 byte values (NUL, CR, LF) come back unchanged."""
        data = bytes(range(256)) * 4 + b"\r\n\r\n\0"
        sink.put(NAME, data)
        assert sink.get(NAME) == data

    def test_new_sink_lists_nothing(self, sink: BackupSink) -> None:
        """A new sink holds no backups."""
        assert sink.list() == []

    def test_list_is_sorted_and_nested(self, sink: BackupSink) -> None:
        """list() returns every name, nested ones included, sorted lexicographically
        whatever the order they were stored in."""
        shuffled = [NAMES[i] for i in (4, 0, 6, 2, 5, 1, 3)]
        for i, name in enumerate(shuffled):
            sink.put(name, b"%d" % i)
        assert sink.list() == sorted(NAMES)
        for i, name in enumerate(shuffled):
            assert sink.get(name) == b"%d" % i

    def test_put_never_replaces(self, sink: BackupSink) -> None:
        """Storing a name twice is a StorageError naming it; the first blob stays."""
        sink.put(NAME, b"first")
        with pytest.raises(StorageError, match="already exists") as info:
            sink.put(NAME, b"second")
        assert NAME in str(info.value)
        assert sink.get(NAME) == b"first"
        assert sink.list() == [NAME]

    def test_error_names_no_data(self, sink: BackupSink) -> None:
        """A refused put does not echo the data it was given."""
        data = b"secret-snapshot-bytes-" + os.urandom(8).hex().encode()
        sink.put(NAME, data)
        with pytest.raises(StorageError) as info:
            sink.put(NAME, data)
        assert data.decode() not in str(info.value)

    def test_get_missing_is_not_found(self, sink: BackupSink) -> None:
        """Getting a name never stored is NotFound."""
        sink.put(NAME, b"x")
        with pytest.raises(NotFound):
            sink.get("2026/11/23/db-2026-11-23T10:54:35.124Z.json")
        with pytest.raises(NotFound):
            sink.get("2026/11/23")

    def test_delete(self, sink: BackupSink) -> None:
        """A deleted backup leaves the listing and is NotFound; the others stay."""
        first, second = NAMES[0], NAMES[1]
        sink.put(first, b"1")
        sink.put(second, b"2")
        sink.delete(first)
        assert sink.list() == [second]
        with pytest.raises(NotFound):
            sink.get(first)
        assert sink.get(second) == b"2"

    def test_delete_then_put_again(self, sink: BackupSink) -> None:
        """A deleted name can be stored again (retention then a restored clock)."""
        sink.put(NAME, b"old")
        sink.delete(NAME)
        assert sink.list() == []
        sink.put(NAME, b"new")
        assert sink.get(NAME) == b"new"

    def test_delete_missing_is_harmless(self, sink: BackupSink) -> None:
        """Deleting a name that was never stored, or twice, is no error."""
        sink.delete(NAME)
        sink.put(NAME, b"x")
        sink.delete(NAME)
        sink.delete(NAME)
        assert sink.list() == []

    @pytest.mark.parametrize("size", [1, 10, 999, 1000, 5000])
    def test_get_head_returns_the_first_bytes(self, sink: BackupSink, size: int) -> None:
        """get_head(name, size) returns the first size bytes of the blob, or all of it
        if it is shorter."""
        data = os.urandom(1000)
        sink.put(NAME, data)
        assert sink.get_head(NAME, size) == data[:size]

    def test_get_head_of_an_empty_blob(self, sink: BackupSink) -> None:
        """The head of an empty blob is empty, not an error."""
        sink.put(NAME, b"")
        assert sink.get_head(NAME, 10) == b""

    def test_get_head_of_a_missing_backup_is_not_found(self, sink: BackupSink) -> None:
        """get_head of a name never stored is NotFound, as get is."""
        sink.put(NAME, b"x")
        with pytest.raises(NotFound):
            sink.get_head(NAMES[1], 10)

    def test_stamps_follow_the_listing(self, sink: BackupSink) -> None:
        """list_stamps() names exactly what list() names; a stamp stays the same while
        its blob does and changes when the blob is replaced (a sink that gives no
        stamps gives "" for every name)."""
        for name in NAMES[:3]:
            sink.put(name, name.encode())
        stamps = sink.list_stamps()
        assert sorted(stamps) == sink.list() == sorted(NAMES[:3])
        assert all(isinstance(stamp, str) for stamp in stamps.values())
        assert sink.list_stamps() == stamps
        sink.delete(NAMES[0])
        sink.put(NAMES[0], b"replaced by another blob")
        again = sink.list_stamps()
        assert again[NAMES[1]] == stamps[NAMES[1]]
        if stamps[NAMES[0]]:
            assert again[NAMES[0]] != stamps[NAMES[0]]
        else:
            assert set(again.values()) == {""}

    @pytest.mark.parametrize("name", BAD_NAMES)
    @pytest.mark.parametrize("operation", ["put", "get", "get_head", "delete"])
    def test_bad_names_are_refused(self, sink: BackupSink, operation: str, name: str) -> None:
        """A name that is not a relative path of [A-Za-z0-9._:-] segments (none empty,
        '.' or '..') is a StorageError, whatever the operation."""
        call: dict[str, Callable[[], object]] = {
            "put": lambda: sink.put(name, b"x"),
            "get": lambda: sink.get(name),
            "get_head": lambda: sink.get_head(name, 10),
            "delete": lambda: sink.delete(name),
        }
        with pytest.raises(StorageError):
            call[operation]()
        assert sink.list() == []

    def test_another_sink_sees_the_same_backups(self, sink: BackupSink, reopen: Reopen) -> None:
        """A second sink on the same location (from the same URI) lists, reads, refuses
        to replace and deletes what the first stored."""
        sink.put(NAMES[0], b"one")
        sink.put(NAMES[1], b"two")
        again = reopen(sink)
        assert again.list() == [NAMES[0], NAMES[1]]
        assert again.get(NAMES[0]) == b"one"
        with pytest.raises(StorageError, match="already exists"):
            again.put(NAMES[1], b"other")
        again.delete(NAMES[0])
        assert sink.list() == [NAMES[1]]

    def test_uri_has_the_scheme(self, sink: BackupSink) -> None:
        """The sink's URI starts with one of its schemes, and its repr shows it."""
        scheme = sink.uri.partition("://")[0]
        assert scheme in sink.schemes
        assert sink.uri in repr(sink)

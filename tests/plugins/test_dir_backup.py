"""dir://: the backup-sink contract on a local directory, URI parsing, file modes, and
temporary files (written first, left by a crash) never listed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from setec_core import ConfigError, NotFound, Plugins, StorageError
from setec_core.backup import BackupSink
from setec_core.testing import BackupSinkContract
from setec_core.testing.backup_contract import NAME
from setec_plugins.dir_backup import TEMP_PREFIX, DirBackupSink

NOBODY = 65534


def run_unprivileged(body: Callable[[Path], None]) -> None:
    """Run ``body(workdir)`` as a user without root's powers: here if we are not root,
    else in a forked child that drops to ``nobody`` (permission errors cannot happen
    to root, and CI runs as root; the child needs no exec, so it runs this very code)."""
    if os.geteuid() != 0:
        with tempfile.TemporaryDirectory() as work:
            body(Path(work))
        return
    # Only this thread goes into the child: another thread holding a lock (logging's,
    # say) at fork would leave it held forever there. The deadline below is the net.
    work = Path(tempfile.mkdtemp())
    os.chown(work, NOBODY, NOBODY)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            body(work)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    os.set_blocking(read, False)
    report, status, deadline = b"", None, time.monotonic() + 30
    while status is None:
        with contextlib.suppress(BlockingIOError):
            report += os.read(read, 65536)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
        elif time.monotonic() > deadline:  # a child stuck (a lock held at fork): end it
            os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
            report += b"(killed after 30 s)"
        else:
            time.sleep(0.01)
    with contextlib.suppress(BlockingIOError):
        report += os.read(read, 65536)
    os.close(read)
    shutil.rmtree(work)
    assert os.waitstatus_to_exitcode(status) == 0, report.decode(errors="replace")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def sink(root: Path) -> Iterator[DirBackupSink]:
    s = DirBackupSink.from_uri(f"dir://{root}")
    yield s
    s.close()


class TestDirBackupContract(BackupSinkContract):
    """DirBackupSink meets the BackupSink contract."""

    @pytest.fixture
    def sink(self, tmp_path: Path) -> Iterator[BackupSink]:
        s = DirBackupSink.from_uri(f"dir://{tmp_path}/backups")
        yield s
        s.close()


# --- URIs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("dir://relative/path", "names a host"),
        ("dir://host/abs/path", "names a host"),
        ("dir://", "no absolute path"),
        ("dir:relative", "not a dir backup URI"),
        ("file:///tmp/x", "not a dir backup URI"),
        ("dir:///tmp/x?mode=0700", "query or fragment"),
        ("dir:///tmp/x#frag", "query or fragment"),
        ("dir:///tmp/x?", "query or fragment"),
    ],
)
def test_malformed_uri_shows_the_form(uri: str, says: str) -> None:
    """A host, a relative path, a query or another scheme is a ConfigError showing the
    expected form."""
    with pytest.raises(ConfigError, match=r"dir:///ABSOLUTE/PATH") as info:
        DirBackupSink.from_uri(uri)
    assert says in str(info.value)


def test_relative_path_is_refused_by_the_constructor() -> None:
    """DirBackupSink("relative") is a ConfigError too."""
    with pytest.raises(ConfigError, match="not an absolute path"):
        DirBackupSink("backups")


def test_uri_round_trips_and_is_normalised(root: Path) -> None:
    """The URI is dir:// plus the normalised absolute path; repr shows it."""
    s = DirBackupSink.from_uri(f"dir://{root}/./x/../")
    assert s.uri == f"dir://{root}"
    assert s.path == str(root)
    assert repr(s) == f"DirBackupSink('dir://{root}')"
    assert DirBackupSink.from_uri(s.uri).uri == s.uri


def test_selected_by_scheme_through_the_entry_point(root: Path) -> None:
    """dir:// URIs select DirBackupSink among the installed plugins."""
    s = Plugins.load().backup_sink(f"dir://{root}")
    assert isinstance(s, DirBackupSink)


# --- the directory ---------------------------------------------------------------------


def test_missing_directory_is_created_0700(tmp_path: Path) -> None:
    """A missing directory (and its missing parents) is created; the directory is 0700."""
    root = tmp_path / "a" / "b" / "backups"
    DirBackupSink.from_uri(f"dir://{root}")
    assert root.is_dir()
    assert mode(root) == 0o700


def test_existing_directory_mode_is_left_alone(root: Path) -> None:
    """An existing directory keeps the mode its operator gave it."""
    root.mkdir(mode=0o750)
    os.chmod(root, 0o750)  # noqa: S103 - the point: an operator's looser mode is kept
    DirBackupSink.from_uri(f"dir://{root}")
    assert mode(root) == 0o750


def test_a_file_in_the_way_is_a_config_error(root: Path) -> None:
    """A file where the directory should be is a ConfigError naming it."""
    root.write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory") as info:
        DirBackupSink.from_uri(f"dir://{root}")
    assert str(root) in str(info.value)


def test_uncreatable_directory_is_a_config_error(tmp_path: Path) -> None:
    """A directory that cannot be created (its parent is a file) is a ConfigError."""
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot create backup directory"):
        DirBackupSink.from_uri(f"dir://{tmp_path}/file/backups")


def test_read_only_directory_is_a_config_error() -> None:
    """A directory this user cannot write is a ConfigError saying so."""

    def body(work: Path) -> None:
        root = work / "backups"
        root.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            DirBackupSink.from_uri(f"dir://{root}")

    run_unprivileged(body)


def test_files_are_0600_and_directories_0700(sink: DirBackupSink, root: Path) -> None:
    """A backup file is 0600 and the day, month and year directories made for it are
    0700, whatever the umask."""
    old = os.umask(0)
    try:
        sink.put(NAME, b"data")
    finally:
        os.umask(old)
    path = root / NAME
    assert path.read_bytes() == b"data"
    assert mode(path) == 0o600
    for folder in (root / "2026", root / "2026/11", root / "2026/11/23"):
        assert mode(folder) == 0o700


def test_put_leaves_no_temporary_file(sink: DirBackupSink, root: Path) -> None:
    """After a put, and after a refused put, no temporary file remains."""
    sink.put(NAME, b"data")
    with pytest.raises(StorageError, match="already exists"):
        sink.put(NAME, b"again")
    assert os.listdir(root / "2026/11/23") == ["db-2026-11-23T10:54:35.123Z.json"]


def test_crash_leftovers_are_ignored(sink: DirBackupSink, root: Path) -> None:
    """Temporary files a crashed put left, other names and symlinks are not listed; a
    later put of the same name still works."""
    sink.put("2026/11/22/db-2026-11-22T00:00:00.000Z.json", b"old")
    day = root / "2026/11/23"
    day.mkdir(parents=True)
    (day / f"{TEMP_PREFIX}0123456789abcdef").write_bytes(b"half a backu")
    (root / f"{TEMP_PREFIX}dir").mkdir()
    (root / f"{TEMP_PREFIX}dir" / "x.json").write_bytes(b"")
    (root / "not a backup name.txt").write_bytes(b"")
    (root / "link.json").symlink_to(root / "2026/11/22/db-2026-11-22T00:00:00.000Z.json")
    assert sink.list() == ["2026/11/22/db-2026-11-22T00:00:00.000Z.json"]
    sink.put(NAME, b"new")
    assert sink.get(NAME) == b"new"
    assert sink.list() == ["2026/11/22/db-2026-11-22T00:00:00.000Z.json", NAME]


@pytest.mark.parametrize("op", ["put", "get", "delete"])
def test_temporary_names_are_refused(sink: DirBackupSink, op: str) -> None:
    """A name with a segment starting with the temporary prefix is refused, since
    list() would never show it."""
    name = f"2026/{TEMP_PREFIX}x"
    with pytest.raises(StorageError, match="temporary"):
        sink.put(name, b"x") if op == "put" else getattr(sink, op)(name)


def test_delete_prunes_empty_directories(sink: DirBackupSink, root: Path) -> None:
    """Deleting the last backup of a day removes the emptied day, month and year
    directories, never the backup directory itself or a directory still in use."""
    sink.put(NAME, b"1")
    sink.put("2026/12/01/db-2026-12-01T00:00:00.000Z.json", b"2")
    sink.delete(NAME)
    assert sorted(os.listdir(root / "2026")) == ["12"]
    sink.delete("2026/12/01/db-2026-12-01T00:00:00.000Z.json")
    assert os.listdir(root) == []
    sink.put(NAME, b"again")
    assert sink.get(NAME) == b"again"


def test_a_directory_is_not_a_backup(sink: DirBackupSink) -> None:
    """get of a name that is a directory is NotFound; delete of it is harmless and
    keeps what is inside."""
    sink.put(NAME, b"1")
    with pytest.raises(NotFound):
        sink.get("2026/11")
    sink.delete("2026/11")
    assert sink.list() == [NAME]


def test_a_file_in_the_path_is_a_storage_error(sink: DirBackupSink) -> None:
    """Putting a/b when backup a exists fails with a one-line StorageError naming the
    path; getting a/b is NotFound."""
    sink.put("a", b"1")
    with pytest.raises(StorageError, match=r"cannot write backup under .*/a: Not a directory"):
        sink.put("a/b", b"2")
    with pytest.raises(NotFound):
        sink.get("a/b")


def test_os_errors_are_storage_errors_without_data() -> None:
    """A permission error is a one-line StorageError naming the path and the reason,
    never the data."""

    def body(work: Path) -> None:
        root = work / "backups"
        sink = DirBackupSink.from_uri(f"dir://{root}")
        sink.put(NAME, b"1")
        day = root / "2026/11/23"
        day.chmod(0o500)
        with pytest.raises(StorageError, match="Permission denied") as info:
            sink.put("2026/11/23/db-2026-11-23T11:00:00.000Z.json", b"secret-bytes")
        message = str(info.value)
        assert str(day) in message
        assert "secret-bytes" not in message
        assert "\n" not in message
        day.chmod(0o700)
        (root / NAME).chmod(0o000)
        with pytest.raises(StorageError, match="cannot read backup"):
            sink.get(NAME)

    run_unprivileged(body)


def test_fifo_is_not_a_backup(sink: DirBackupSink, root: Path) -> None:
    """A FIFO planted where a backup should be is neither listed nor read (no hang)."""
    day = root / "2026/11/23"
    day.mkdir(parents=True)
    os.mkfifo(day / "db-2026-11-23T10:54:35.123Z.json")
    assert sink.list() == []
    with pytest.raises(NotFound):
        sink.get(NAME)


def test_name_too_long_for_the_file_system(sink: DirBackupSink, root: Path) -> None:
    """A name the file system cannot hold (a 300-character segment) is a one-line
    StorageError naming the path and the OS's reason, for put, get and delete."""
    name = "2026/" + "x" * 300
    for call, says in [
        (lambda: sink.put(name, b"secret-bytes"), "cannot write backup"),
        (lambda: sink.get(name), "cannot read backup"),
        (lambda: sink.delete(name), "cannot delete backup"),
    ]:
        with pytest.raises(StorageError, match=f"{says} {root}/2026/x+: File name too long$"):
            call()


def test_a_symlinked_directory_is_refused(sink: DirBackupSink, root: Path, tmp_path: Path) -> None:
    """A day directory that is a symbolic link is refused: list() does not follow links,
    so a backup written through one would be invisible to listing and retention."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "2026").symlink_to(elsewhere)
    with pytest.raises(StorageError, match="symbolic link"):
        sink.put(NAME, b"1")
    assert list(elsewhere.iterdir()) == []
    assert sink.list() == []


def test_read_only_sink_creates_nothing(tmp_path: Path) -> None:
    """read_only (list, verify, restore): a missing directory is a ConfigError and is not
    created."""
    missing = tmp_path / "typo" / "deeper"
    with pytest.raises(ConfigError, match="does not exist"):
        DirBackupSink.from_uri(f"dir://{missing}", read_only=True)
    assert not (tmp_path / "typo").exists()


def test_read_only_sink_reads_a_read_only_directory() -> None:
    """read_only needs no write access: backups on a read-only directory list and read."""

    def body(work: Path) -> None:
        root = work / "backups"
        DirBackupSink.from_uri(f"dir://{root}").put(NAME, b"kept")
        for path in sorted(root.rglob("*"), reverse=True):
            path.chmod(0o500 if path.is_dir() else 0o400)
        root.chmod(0o500)
        with pytest.raises(ConfigError, match="not writable"):
            DirBackupSink.from_uri(f"dir://{root}")
        reader = DirBackupSink.from_uri(f"dir://{root}", read_only=True)
        assert reader.list() == [NAME]
        assert reader.get(NAME) == b"kept"

    run_unprivileged(body)


# --- what was planted in the folder ----------------------------------------------------


def _outside_backup(tmp_path: Path) -> Path:
    """A file outside the backup folder, under a backup's name."""
    real = tmp_path / "outside" / NAME
    real.parent.mkdir(parents=True)
    real.write_bytes(b"outside the backup folder")
    return real


@pytest.mark.parametrize("where", ["file", "day", "year"])
def test_reads_and_deletes_never_follow_a_symbolic_link(
    sink: DirBackupSink, root: Path, tmp_path: Path, where: str
) -> None:
    """A symbolic link planted anywhere below the root (the backup file itself, its day
    folder, its year folder) is not followed: get is NotFound and delete leaves the
    file it points at alone."""
    real = _outside_backup(tmp_path)
    root.mkdir(exist_ok=True)
    link, target = {
        "file": (root / NAME, real),
        "day": (root / "2026/11/23", real.parent),
        "year": (root / "2026", tmp_path / "outside" / "2026"),
    }[where]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    with pytest.raises(NotFound):
        sink.get(NAME)
    sink.delete(NAME)
    assert real.read_bytes() == b"outside the backup folder"
    assert sink.list() == []


def _nest(root: Path, depth: int) -> None:
    # Made relative to open directories: the full path is longer than PATH_MAX.
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("x", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
            f.write(b"deep")
    finally:
        os.close(fd)


def _unnest(root: Path, depth: int) -> None:
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        os.unlink("x", dir_fd=fds[-1])
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def test_a_deeply_nested_folder_lists_without_error(sink: DirBackupSink, root: Path) -> None:
    """A folder nested deeper than any backup name can reach (names are at most 1000
    characters) is listed without error, and nothing in it is a backup; backups beside
    it are listed."""
    sink.put(NAME, b"kept")
    depth = 1200
    _nest(root, depth)
    try:
        assert sink.list() == [NAME]
    finally:
        _unnest(root, depth)


def test_names_up_to_the_longest_are_listed(sink: DirBackupSink) -> None:
    """A backup nested as deep as a valid name allows (1000 characters) is listed."""
    name = "/".join(["a"] * 499) + "/bb"
    assert len(name) == 1000
    sink.put(name, b"deep")
    assert sink.list() == [name]
    assert sink.get(name) == b"deep"

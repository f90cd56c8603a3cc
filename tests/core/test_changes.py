"""The Database's change feed (:mod:`setec_core.changes`): which writes wake which
subscribers, that other processes' commits read by ``refresh`` wake them too, and that
a cancelled subscription is forgotten."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from setec_core import Database
from setec_core.changes import ChangeFeed
from setec_core.testing import SUPERUSER, new_database

SU = SUPERUSER


class Woken:
    """Counts the wake-ups of the subscriptions it made, by label."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed
        self.counts: Counter[str] = Counter()

    def subscribe(self, label: str, *names: str) -> object:
        """Subscribe ``names`` under ``label``."""
        return self.feed.subscribe(names, lambda: self.counts.update([label]))


def test_a_change_wakes_each_subscription_naming_it_once() -> None:
    """``changed`` wakes every subscription naming a changed secret, once per call
    however many of its names changed, and no other."""
    feed = ChangeFeed()
    woken = Woken(feed)
    woken.subscribe("ab", "a", "b")
    woken.subscribe("b", "b")
    woken.subscribe("c", "c")
    feed.changed(["a", "b", "z"])
    assert woken.counts == {"ab": 1, "b": 1}


def test_a_cancelled_subscription_is_forgotten() -> None:
    """After ``cancel`` nothing wakes it and the feed holds no name for it; cancelling
    twice is harmless."""
    feed = ChangeFeed()
    woken = Woken(feed)
    first = woken.subscribe("first", "a", "b")
    woken.subscribe("second", "b")
    feed.cancel(first)  # type: ignore[arg-type]
    feed.cancel(first)  # type: ignore[arg-type]
    feed.changed(["a", "b"])
    assert woken.counts == {"second": 1}
    assert len(feed) == 1


@pytest.mark.parametrize(
    ("write", "names"),
    [
        (lambda db: db.put(SU, "a", b"2"), ["a"]),
        (lambda db: db.put_many(SU, {"a": b"2", "new": b"1"}), ["a", "new"]),
        (lambda db: db.create_version(SU, "a", 9, b"9"), ["a"]),
        (lambda db: db.activate(SU, "a", 2), ["a"]),
        (lambda db: db.delete_version(SU, "a", 2), ["a"]),
        (lambda db: db.delete(SU, "a"), ["a"]),
    ],
    ids=["put", "put-many", "create-version", "activate", "delete-version", "delete"],
)
def test_each_write_wakes_the_secrets_it_changed(
    write: Callable[[Database], object], names: list[str]
) -> None:
    """Every kind of write wakes the subscribers of the secrets it changed, once the
    index holds their new state, and nobody else's."""
    with new_database() as db:
        db.put(SU, "a", b"1")
        db.put(SU, "a", b"x")
        db.put(SU, "other", b"1")
        seen: dict[str, int] = {}
        for name in ("a", "new", "other"):
            db.changes.subscribe([name], lambda n=name: seen.update({n: db.active_version(n)}))
        write(db)
        assert sorted(seen) == names
        for name in names:
            assert seen[name] == db.active_version(name)


@pytest.mark.parametrize(
    "write",
    [
        lambda db: db.put(SU, "a", b"1"),
        lambda db: db.activate(SU, "a", 1),
        lambda db: db.delete(SU, "missing"),
    ],
    ids=["same-value", "same-version", "missing"],
)
def test_a_write_that_changes_nothing_wakes_nobody(write: Callable[[Database], object]) -> None:
    """A put of the latest value, an activate of the active version and a delete of a
    missing secret change nothing, and wake nothing."""
    with new_database() as db:
        db.put(SU, "a", b"1")
        woken = Woken(db.changes)
        woken.subscribe("all", "a", "missing")
        write(db)
        assert woken.counts == {}


def test_another_process_commits_wake_subscribers_when_read(tmp_path: Path) -> None:
    """A Database that reads another's commits (``refresh``, as its follower does)
    wakes its subscribers of the secrets they changed, deletions included."""
    store = f"sqlite://{tmp_path / 'secrets.db'}"
    with (
        Database.open(tmp_path / "one", key="dev://", storage=store) as one,
        Database.open(tmp_path / "two", key="dev://", storage=store) as two,
    ):
        one.put(SU, "a", b"1")
        one.put(SU, "b", b"1")
        assert two.refresh()
        woken = Woken(two.changes)
        woken.subscribe("a", "a")
        woken.subscribe("b", "b")
        woken.subscribe("c", "c")
        one.put(SU, "a", b"2")
        one.activate(SU, "a", 2)
        one.delete(SU, "b")
        assert woken.counts == {}
        assert two.refresh()
        assert woken.counts == {"a": 1, "b": 1}
        assert (two.active_version("a"), two.active_version("b")) == (2, 0)

"""Guarded writes: a write that goes through only while its secret is as the caller
last saw it (check-and-set, docs/api.md §9.4).

A :class:`Guard` holds what the write expects, in the terms ``info`` shows: the active
version, the set of versions, or both. The Database checks it under its write lock
against the state whose record the write replaces (the storage compare-and-swap then
holds the write to exactly that state, across server processes too), and
:func:`conflict` words the refusal for the caller, saying what differed only to a
caller who may ``info`` the secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from setec_core.errors import InvalidRequestError, VersionConflict
from setec_core.model import MAX_VERSION, SecretInfo


@dataclass(frozen=True, slots=True)
class Guard:
    """What a guarded write expects of its secret. A field left ``None`` is not checked;
    the write goes through only if every field given holds.

    :param active_version: the version that must be active; 0: the secret must not
        exist.
    :param versions: exactly the versions the secret must have (order does not
        matter); empty: the secret must not exist.
    """

    active_version: int | None = None
    versions: frozenset[int] | None = None

    def holds(self, info: SecretInfo | None) -> bool:
        """Whether the secret, as ``info`` shows it (``None``: it does not exist), is
        what this guard expects."""
        if self.active_version is not None:
            active = 0 if info is None else info.active_version
            if active != self.active_version:
                return False
        if self.versions is not None:
            versions = frozenset() if info is None else frozenset(info.versions)
            if versions != self.versions:
                return False
        return True


def guard_of(if_active_version: Any = None, if_versions: Any = None) -> Guard | None:
    """The :class:`Guard` a write's ``if_active_version=`` and ``if_versions=`` ask for,
    or ``None`` when neither is given (an unguarded write).

    :raises InvalidRequestError: naming the argument, for an ``if_active_version`` that
        is not an int from 0 to 4294967295, or ``if_versions`` that is not a collection
        of distinct ints from 1 to 4294967295.
    """
    if if_active_version is None and if_versions is None:
        return None
    active = None
    if if_active_version is not None:
        if not _is_int(if_active_version) or not 0 <= if_active_version <= MAX_VERSION:
            raise InvalidRequestError(
                f"if_active_version must be an integer from 0 to {MAX_VERSION} (0: the "
                f"secret must not exist), not {_shown(if_active_version)}"
            )
        active = if_active_version
    versions = None
    if if_versions is not None:
        versions = _versions(if_versions)
    return Guard(active, versions)


def _versions(raw: Any) -> frozenset[int]:
    rule = f"distinct integers from 1 to {MAX_VERSION} (empty: the secret must not exist)"
    if isinstance(raw, str | bytes | bytearray) or not isinstance(raw, Iterable):
        raise InvalidRequestError(
            f"if_versions must be a collection of {rule}, not {type(raw).__name__}"
        )
    versions: set[int] = set()
    for item in raw:
        if not _is_int(item) or not 1 <= item <= MAX_VERSION:
            raise InvalidRequestError(
                f"if_versions must be a collection of {rule}; it holds {_shown(item)}"
            )
        if item in versions:
            raise InvalidRequestError(
                f"if_versions must be a collection of {rule}; it holds {item} more than once"
            )
        versions.add(item)
    return frozenset(versions)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    # A number is shown; anything else only by its type, which is enough to fix it.
    return str(value) if _is_int(value) else type(value).__name__


def conflict(guard: Guard, name: str, info: SecretInfo | None, *, visible: bool) -> VersionConflict:
    """The refusal of a write whose ``guard`` does not hold for the secret ``name``,
    which ``info`` shows (``None``: it does not exist).

    :param visible: whether the caller may ``info`` the secret. Only then does the
        error carry the current state and the message say what differed; otherwise
        it says only that the guard failed, so that guards tell a caller no more than
        ``info`` would.
    """
    head = f"guard failed for secret {_named(name)}"
    tail = "; nothing was written"
    if not visible:
        return VersionConflict(head + tail)
    if info is None:
        return VersionConflict(f"{head}: it does not exist{tail}")
    if guard.active_version == 0 or guard.versions == frozenset():
        return VersionConflict(
            f"{head}: it exists (active version {info.active_version}, versions "
            f"{_listed(info.versions)}){tail}",
            info,
        )
    differences = []
    if guard.active_version is not None and guard.active_version != info.active_version:
        differences.append(
            f"its active version is {info.active_version} (expected {guard.active_version})"
        )
    if guard.versions is not None and guard.versions != frozenset(info.versions):
        differences.append(
            f"its versions are {_listed(info.versions)} (expected {_listed(guard.versions)})"
        )
    return VersionConflict(f"{head}: {' and '.join(differences)}{tail}", info)


def _listed(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(versions))


def _named(name: str) -> str:
    # As the Database's other messages name a secret: a repr, cut past 60 characters.
    return repr(name) if len(name) <= 60 else repr(name[:60]) + "..."

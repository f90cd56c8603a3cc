"""``Keyring``: every version of one secret, for key rotation, as Go's ``Keyring``.

A program that signs with the active version of a key and verifies with any version
keeps a Keyring: :meth:`Keyring.active` to sign, :meth:`Keyring.get` to verify, and
:meth:`Keyring.update` now and then to learn new versions and which one is active.

Differences from Go: Go's Keyring never forgets a version deleted
on the server. Here too by default (a token signed with a retired key can still be
verified), but ``prune=True`` drops such versions at each update. And where Go would
crash if the active version were missing, :meth:`Keyring.active` raises
:class:`~setec_core.errors.NotFound` naming the secret and the version.
"""

from __future__ import annotations

import threading
from typing import Protocol

from setec_core.errors import (
    AccessDenied,
    NotFound,
    SetecError,
    UnavailableError,
    ValueNotChanged,
    VersionClaimed,
)
from setec_core.model import SecretInfo, SecretValue


class VersionReader(Protocol):
    """What a Keyring reads from: ``info`` and ``get_version``, as
    :class:`~setec_core.client.Client` provides."""

    def info(self, name: str) -> SecretInfo:
        """The versions of ``name`` and which one is active."""
        ...

    def get_version(self, name: str, version: int) -> SecretValue:
        """Version ``version`` of ``name``."""
        ...


class Keyring:
    """The versions of secret ``name`` held by this process, and which one is active.

    Make one with :meth:`fetch` (or :meth:`Client.get_keyring
    <setec_core.client.Client.get_keyring>`); a Keyring made directly is empty until
    its first :meth:`update`. Thread-safe: reads never wait for the network, and
    updates run one at a time.

    The caller needs the ``info`` and ``get`` permissions on ``name``; each version
    fetched writes a ``get`` line to the server's audit log.

    :param client: what to read the versions from.
    :param name: the secret.
    :param prune: whether :meth:`update` forgets versions the server no longer lists
        (by default they are kept, as in Go).
    """

    def __init__(self, client: VersionReader, name: str, *, prune: bool = False) -> None:
        self.name = name
        self.prune = prune
        self._client = client
        self._lock = threading.Lock()  # guards _values and _active; never held for I/O
        self._updating = threading.Lock()  # one update at a time, so none goes backwards
        self._values: dict[int, bytes] = {}
        self._active = 0

    @classmethod
    def fetch(cls, client: VersionReader, name: str, *, prune: bool = False) -> Keyring:
        """A Keyring of ``name`` holding every version the server lists.

        :raises NotFound, AccessDenied, SetecError: as :meth:`update`.
        """
        keyring = cls(client, name, prune=prune)
        keyring.update()
        return keyring

    def update(self) -> None:
        """Ask the server which versions exist and which is active; fetch the versions
        not yet held.

        All or nothing: if any request fails, the Keyring is left as it was.

        :raises NotFound: if the secret does not exist, or a version vanished while
            being fetched (try again).
        :raises AccessDenied: without ``info`` or ``get`` permission.
        :raises SetecError: for other failures; the message names the secret and, for a
            fetch, the version.
        """
        with self._updating:
            try:
                info = self._client.info(self.name)
            except SetecError as e:
                raise _named(e, f"info {_quote(self.name)}") from e
            listed = set(info.versions)
            if info.active_version:
                # A server lists its active version; fetch it even if one did not.
                listed.add(info.active_version)
            with self._lock:
                missing = sorted(listed - self._values.keys())
            fetched = {}
            for version in missing:
                try:
                    fetched[version] = self._client.get_version(self.name, version).value
                except SetecError as e:
                    raise _named(e, f"get {_quote(self.name)} version {version}") from e
            with self._lock:
                self._values.update(fetched)
                if self.prune:
                    self._values = {v: b for v, b in self._values.items() if v in listed}
                self._active = info.active_version

    def active(self) -> SecretValue:
        """The active version and its value.

        :raises NotFound: if the Keyring does not hold the active version (it was never
            updated successfully).
        """
        with self._lock:
            value = self._values.get(self._active)
            active = self._active
        if value is None:
            if active == 0:
                raise NotFound(f"keyring {_quote(self.name)} holds no versions; call update()")
            raise NotFound(f"keyring {_quote(self.name)} does not hold active version {active}")
        return SecretValue(value=value, version=active)

    @property
    def active_version(self) -> int:
        """The number of the active version (0 before the first update)."""
        with self._lock:
            return self._active

    def get(self, version: int) -> bytes | None:
        """The value of ``version``, or ``None`` if the Keyring does not hold it."""
        with self._lock:
            return self._values.get(version)

    def versions(self) -> list[int]:
        """The versions held, in ascending order."""
        with self._lock:
            return sorted(self._values)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __repr__(self) -> str:
        # Version numbers only: never a value.
        with self._lock:
            return f"Keyring({self.name!r}, versions={sorted(self._values)}, active={self._active})"


def _named(error: SetecError, what: str) -> SetecError:
    """``error`` with ``what`` in front of its message, keeping the wire sentinel's
    class so callers can still catch NotFound or AccessDenied. (Other errors become a
    plain SetecError; the original stays reachable as ``__cause__``.)"""
    for cls in (NotFound, AccessDenied, ValueNotChanged, VersionClaimed):
        if isinstance(error, cls):
            return cls(f"{what}: {error}")
    if isinstance(error, UnavailableError):
        return UnavailableError(f"{what}: {error}")
    return SetecError(f"{what}: {error}")


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

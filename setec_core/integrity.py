"""Store integrity: what makes a store tamper-evident as a whole, under its data key.

Each record is sealed with AEAD and bound to its storage key, so a record on its own
cannot be altered or moved. The *set* of records could still be changed by anyone who
can write the store: an older ciphertext copied back over a record (an old password, a
deleted version), a deleted secret's row put back, a row removed. The metadata entry
``integrity`` (:data:`INTEGRITY_META`) closes that gap. It holds:

* ``records`` and ``digest``: how many live records the store has, and the XOR over
  them of a keyed term: AES-256, under a key derived from the data key, of the
  record's 16-byte AEAD tag (one block, so AES is used as a pseudo-random function of
  the tag). The tag authenticates the record's nonce, ciphertext and storage key, so it
  is unique to that exact ciphertext and the term changes whenever the record does.
  XOR makes the digest O(1) to update per commit from the terms of the old and the new
  record (the Database keeps every record's term in memory); with keyed terms nobody
  without the key can find another set of records with the same digest. Terms are
  computed for many records in one call, which keeps an open of 100,000 records cheap;
* ``commits``: how many commits changed the store's records (one more with each);
* ``heads``: for each replica (each server process over the store, with its own
  audit log, docs/replicas.md), the last durable line of its audit log when it last
  wrote the entry (:class:`~setec_core.audit_chain.AuditHead`). Each replica updates
  its own and carries the others' over;
* a tag: HMAC-SHA256 of all of the above under another key derived from the data key.

Every commit that changes records writes the entry in the same storage commit, with a
compare-and-swap on its current value, so two writers can never overwrite each other's
entry. The entry is checked at every open. The audit key, which keys the audit log's
chain, is kept beside it, sealed under the data key (:data:`AUDIT_KEY_META`).
"""

from __future__ import annotations

import functools
import hmac
import operator
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from setec_core.audit_chain import KEYED, AuditHead
from setec_core.crypto import DataKey, Mac
from setec_core.errors import IntegrityCheckError
from setec_core.storage import Record

if TYPE_CHECKING:
    from setec_core.audit import AuditLog

INTEGRITY_META = "integrity"
AUDIT_KEY_META = "audit-key"

#: The name under which an unnamed audit log's head is recorded (see StoreSeal).
LEGACY_REPLICA = ""

_VERSION_V1 = 1
_BODY_V1 = struct.Struct(">BQQ32sBQQ32s")
_VERSION = 2
_BODY_V2 = struct.Struct(">BQQ32sH")
_HEAD = struct.Struct(">QQ32s")
_TAG = 32
_AEAD_TAG = 16
_CHECK = "'setec-serve check' shows the details"


class StoreKeys:
    """The keys of a store's integrity entry, derived from its data key. Its ``repr``
    never shows them."""

    __slots__ = ("_seal", "_term")

    def __init__(self, dek: DataKey) -> None:
        self._seal = Mac(dek.derive(b"setec store integrity v1"))
        self._term = algorithms.AES(dek.derive(b"setec store record terms v1"))

    def terms(self, datas: Sequence[bytes]) -> list[int]:
        """The digest terms of live records holding ``datas``, in order."""
        tags = b"".join(data[-_AEAD_TAG:] for data in datas)
        if len(tags) != _AEAD_TAG * len(datas):
            # A record shorter than a tag (it will not open either): pad it to one block.
            tags = b"".join(data[-_AEAD_TAG:].rjust(_AEAD_TAG, b"\x00") for data in datas)
        # ECB on single blocks: each tag is enciphered on its own, as a PRF.
        out = Cipher(self._term, modes.ECB()).encryptor().update(tags)  # noqa: S305
        from_bytes = int.from_bytes
        return [from_bytes(out[i : i + _AEAD_TAG]) for i in range(0, len(out), _AEAD_TAG)]

    def term(self, data: bytes) -> int:
        """The digest term of a live record holding ``data``."""
        return self.terms([data])[0]

    def tag(self, body: bytes) -> bytes:
        """The tag of an encoded entry's body."""
        return self._seal.digest(body)

    def __repr__(self) -> str:
        return "StoreKeys(<redacted>)"


@dataclass(frozen=True)
class StoreSeal:
    """The contents of a store's integrity entry (see the module's docstring).

    ``heads`` holds each replica's recorded audit head by replica name (docs/replicas.md):
    every server process over the store keeps its own audit log, and records where it
    ended. :data:`LEGACY_REPLICA` (``""``) is the head of an unnamed log: the one head a
    store written by setec before replicas recorded, or a Database opened without a
    state directory.
    """

    commits: int
    records: int
    digest: int
    heads: Mapping[str, AuditHead] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"StoreSeal(commits={self.commits}, records={self.records}, heads={dict(self.heads)})"
        )

    def head_of(self, replica: str) -> AuditHead | None:
        """The head recorded for ``replica``, or ``None``."""
        return self.heads.get(replica)

    def encode(self, keys: StoreKeys) -> bytes:
        """The entry's bytes, tagged with ``keys``."""
        parts = [
            _BODY_V2.pack(
                _VERSION, self.commits, self.records, self.digest.to_bytes(32), len(self.heads)
            )
        ]
        for name in sorted(self.heads):
            head = self.heads[name]
            raw = name.encode()
            parts.append(
                bytes([len(raw)])
                + raw
                + _HEAD.pack(head.start, head.end, bytes.fromhex(head.link[len(KEYED) :]))
            )
        body = b"".join(parts)
        return body + keys.tag(body)

    @classmethod
    def decode(cls, keys: StoreKeys, blob: bytes) -> StoreSeal:
        """Authenticate and parse an entry (this version's, or the single-head entry of
        setec before replicas, whose head becomes the :data:`LEGACY_REPLICA`'s).

        :raises IntegrityCheckError: if it is not authentic under ``keys``.
        """
        body, tag = blob[:-_TAG], blob[-_TAG:]
        if not body or not hmac.compare_digest(keys.tag(body), tag):
            raise _not_authentic()
        try:
            if body[0] == _VERSION_V1 and len(body) == _BODY_V1.size:
                _, commits, records, digest, has_head, start, end, link = _BODY_V1.unpack(body)
                heads = {LEGACY_REPLICA: _head(start, end, link)} if has_head else {}
                return cls(commits, records, int.from_bytes(digest), heads)
            if body[0] != _VERSION:
                raise _not_authentic()
            _, commits, records, digest, count = _BODY_V2.unpack_from(body)
            at = _BODY_V2.size
            heads = {}
            for _ in range(count):
                size = body[at]
                name = body[at + 1 : at + 1 + size].decode()
                at += 1 + size
                start, end, link = _HEAD.unpack_from(body, at)
                at += _HEAD.size
                heads[name] = _head(start, end, link)
        except (struct.error, IndexError, UnicodeDecodeError):
            raise _not_authentic() from None
        if at != len(body):
            raise _not_authentic()
        return cls(commits, records, int.from_bytes(digest), heads)

    def advanced(self, records: int, digest: int) -> StoreSeal:
        """The entry after a commit that changed records (heads as they were)."""
        return replace(self, commits=self.commits + 1, records=records, digest=digest)

    def with_head(
        self, replica: str, head: AuditHead | None, *, drop_legacy: bool = False
    ) -> StoreSeal:
        """The entry with ``head`` recorded for ``replica`` (unchanged if ``None``).

        :param drop_legacy: also forget the :data:`LEGACY_REPLICA`'s head, which
            ``replica``'s log continues (a log from before replicas, now named).
        """
        if head is None and not drop_legacy:
            return self
        heads = dict(self.heads)
        if drop_legacy and replica != LEGACY_REPLICA:
            heads.pop(LEGACY_REPLICA, None)
        if head is not None:
            heads[replica] = head
        return replace(self, heads=heads)


def _head(start: int, end: int, link: bytes) -> AuditHead:
    return AuditHead(start, end, KEYED + link.hex())


def _not_authentic() -> IntegrityCheckError:
    return IntegrityCheckError(
        "its integrity entry is not authentic under the store's data key (it was "
        "altered, or copied from another store)"
    )


def recorded_head(
    seal: StoreSeal | None, replica: str, *, log_ends_keyed: bool
) -> tuple[AuditHead | None, bool]:
    """The head ``seal`` recorded for the audit log of ``replica``, and whether it is
    the unnamed (:data:`LEGACY_REPLICA`) head that log continues: a log that was
    written (it ends in a keyed line) before it had a name, which has no head of its
    own yet. A new, empty log of a replica joining the store has no head to check.

    :param log_ends_keyed: whether the replica's log ends in a keyed line.
    """
    if seal is None:
        return None, False
    head = seal.head_of(replica)
    if head is None and replica != LEGACY_REPLICA and log_ends_keyed:
        head = seal.head_of(LEGACY_REPLICA)
        return head, head is not None
    return head, False


def written_by_another(log: AuditLog, replica: str) -> str:
    """Say why ``log`` must not be used as ``replica``'s, or ``""``: its last line (call
    this once that line's link has been checked under the key) names another replica.
    Opened under a name without a recorded head, a log would be checked against no head
    at all, so a renamed state directory could hide lines cut from its log.
    """
    written_by = log.last_replica
    if not written_by or written_by == replica:
        return ""
    return (
        f"audit.log was written by replica {written_by!r}, but it is opened as replica "
        f"{replica!r}: the state directory's replica file was changed, or the log comes "
        f"from another state directory; put {written_by!r} back in the replica file "
        "('setec-serve audit verify' shows the details)"
    )


def claims_more(log: AuditLog, seal: StoreSeal, where: str) -> str:
    """Say how the store was rolled back, or ``""``: the last line of ``log`` (its link
    checked under the key) was written when the store had made more commits than
    ``seal`` records. For a log with no recorded head, whose other lines are not read.
    """
    claim = log.last_claim
    if claim is None or claim <= seal.commits:
        return ""
    return (
        f"store {where} was rolled back to an earlier state: the last line of audit.log "
        f"was written when the store had made {claim} commits, but its integrity entry "
        f"records {seal.commits} (an older copy of the store was put back); restore it "
        "from a backup, then start this replica with a new, empty state directory"
    )


def digest_of(keys: StoreKeys, records: Iterable[Record]) -> tuple[int, int]:
    """Return the digest and the number of ``records`` (live records only)."""
    terms = keys.terms([record.data for record in records if record.data is not None])
    return xor_all(terms), len(terms)


def xor_all(terms: Iterable[int]) -> int:
    """The XOR of ``terms`` (a digest)."""
    return functools.reduce(operator.xor, terms, 0)


def read_seal(meta: Mapping[str, bytes], keys: StoreKeys, where: str) -> StoreSeal | None:
    """Authenticate the integrity entry in ``meta``; ``None`` if the store has none
    because it was written by an earlier version of setec (it has no audit key either).

    :param where: the store's URI, for messages.
    :raises IntegrityCheckError: if the entry is not authentic, or is missing from a
        store that has an audit key (so it had one).
    """
    blob = meta.get(INTEGRITY_META)
    if blob is None:
        if AUDIT_KEY_META in meta:
            raise IntegrityCheckError(
                f"store {where} has an audit key but no integrity entry: the entry was "
                "deleted (to pass the store off as one of an earlier version); restore the "
                f"store from a backup ({_CHECK})"
            )
        return None
    try:
        return StoreSeal.decode(keys, blob)
    except IntegrityCheckError as e:
        raise IntegrityCheckError(
            f"store {where}: {e}; restore the store from a backup ({_CHECK})"
        ) from None


def mismatch(seal: StoreSeal, records: int, digest: int) -> str:
    """Say how the records differ from what ``seal`` vouches for, or ``""`` if they
    match."""
    if records != seal.records:
        diff = records - seal.records
        what = "added" if diff > 0 else "removed"
        return (
            f"it holds {_plural(records, 'record')} where its integrity entry vouches for "
            f"{seal.records}: {_plural(abs(diff), 'record')} {what} outside setec"
        )
    if digest != seal.digest:
        return (
            "its records are not the set its integrity entry vouches for: a record was "
            "replaced by other data (an older copy of it, or a deleted one put back)"
        )
    return ""


def check_records(where: str, seal: StoreSeal, records: int, digest: int) -> None:
    """Raise if the records do not match ``seal``.

    :raises IntegrityCheckError: naming what differs and what to do.
    """
    problem = mismatch(seal, records, digest)
    if problem:
        raise IntegrityCheckError(
            f"store {where} fails its integrity check: {problem}; restore it from a backup "
            f"({_CHECK})"
        )


def new_audit_key() -> bytes:
    """A fresh random audit key (256 bits)."""
    return os.urandom(32)


def open_audit_key(dek: DataKey, meta: Mapping[str, bytes]) -> bytes | None:
    """Return the store's audit key from ``meta``, or ``None`` if it has none yet.

    :raises CorruptStoreError: if the entry does not open under ``dek``.
    """
    blob = meta.get(AUDIT_KEY_META)
    return None if blob is None else dek.open_meta(AUDIT_KEY_META, blob)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

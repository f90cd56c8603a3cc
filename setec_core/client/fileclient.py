"""``FileClient``: secrets from a JSON file instead of a server, as Go's ``FileClient``.

For bootstrapping, tests and machines that cannot reach a setec server. The file is read
once, when the FileClient is made; later changes to it are not seen. A
:class:`~setec_core.client.Store` over a FileClient fails at once, rather than retrying,
if the file lacks a declared secret.

The file is a JSON object of secret name -> entry::

    {"svc/api-key":  {"secret": {"Version": 3, "Value": "c2VjcmV0LWJ5dGVz"}},
     "svc/password": {"secret": {"Version": 7, "TextValue": "hunter2"}},
     "svc/ignored":  {"note": "no secret key, skipped"}}

Member names match case-insensitively (``"secret"``, ``"Secret"``, ``"version"`` ...),
as Go's decoder does; other members are ignored, so a Store's cache file is valid
input. ``Version`` must be an integer in 0..4294967295, ``Value`` padded
standard base64 (line breaks inside it are ignored), ``TextValue`` a string; any entry
breaking these rules makes the whole file an error, even one that would be skipped.

Skipped, silently as in Go: an entry named ``""``; one with no ``secret`` or a ``null``
one (a cache entry holding only explicit versions); ``Version`` 0 or absent; and one
with neither a ``Value`` nor a non-empty ``TextValue``. A non-empty ``TextValue`` wins
over ``Value``.

Difference from Go: Go skips an entry whose value is empty, so an
empty secret cannot be written down. Here an entry that *has* a ``Value`` member, even
``""``, holds that value: ``{"secret": {"Version": 1, "Value": ""}}`` is an empty
secret. That is also how a Store's cache records an empty secret, so a cache file reads
back faithfully. A ``Value`` of ``null`` counts as absent, as in Go.

Difference from Go: a file that is not a JSON object (``null`` included, which Go reads
as an empty file) is an error. Errors name the file and the entry, never a value.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from setec_core.encoding import decode_base64
from setec_core.errors import ConfigError, NotFound, ValueNotChanged
from setec_core.model import MAX_VERSION, SecretValue

log = logging.getLogger("setec.client.fileclient")


class FileClient:
    """Secrets read once from the JSON file at ``path`` (format: module docstring).

    Provides ``get`` and ``get_if_changed``, so it can stand in for a
    :class:`~setec_core.client.Client` under a :class:`~setec_core.client.Store`. It
    cannot read explicit versions. Thread-safe: it never changes after construction.

    :param path: the secrets file.
    :raises ConfigError: if the file cannot be read or is not a valid secrets file; the
        message names the file (and the entry at fault), never a value.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(
                f"cannot read secrets file {self.path}: {e.strerror or type(e).__name__}"
            ) from None
        self._secrets = _decode(data, self.path)

    def get(self, name: str) -> SecretValue:
        """The value of ``name`` held in the file.

        :raises NotFound: if the file holds no usable entry for ``name``.
        """
        secret = self._secrets.get(name)
        if secret is None:
            raise NotFound(f"not found in secrets file {self.path}")
        return secret

    def get_if_changed(self, name: str, old_version: int) -> SecretValue:
        """The value of ``name`` unless its version is ``old_version``.

        :raises NotFound: if the file holds no usable entry for ``name``.
        :raises ValueNotChanged: if the file's version of ``name`` is ``old_version``.
        """
        secret = self.get(name)
        if secret.version == old_version:
            raise ValueNotChanged()
        return secret

    def names(self) -> list[str]:
        """The names of the secrets the file holds, sorted (skipped entries left out)."""
        return sorted(self._secrets)

    def __repr__(self) -> str:
        # Names and values stay out: the count is enough to tell files apart.
        return f"FileClient({self.path!r}, {len(self._secrets)} secrets)"


def _decode(data: bytes, path: str) -> dict[str, SecretValue]:
    prefix = f"decode secrets file {path}"
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        # Not the codec's message: it quotes the offending byte.
        raise ConfigError(f"{prefix}: the file is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        # Only the position: the decoder's message can quote characters of the document,
        # and the exception carries the whole document (hence no chaining either).
        raise ConfigError(f"{prefix}: not valid JSON (line {e.lineno}, column {e.colno})") from None
    except (ValueError, RecursionError):
        raise ConfigError(f"{prefix}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{prefix}: expected a JSON object of secret name -> entry, found {_kind(doc)}"
        )
    secrets = {}
    for name, raw in doc.items():
        secret = _entry(raw, f"{prefix}: entry {_quote(name)}")
        if secret is None:
            log.debug("%s: skipping entry %s: no usable secret", path, _quote(name))
        elif not name:
            log.debug("%s: skipping the entry with an empty name", path)
        else:
            secrets[name] = secret
    return secrets


def _entry(raw: Any, where: str) -> SecretValue | None:
    """The value of one entry, or None if it is to be skipped."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, found {_kind(raw)}")
    secret = _fold(raw).get("secret")
    if secret is None:
        return None
    if not isinstance(secret, dict):
        raise ConfigError(f"{where}: secret: expected a JSON object, found {_kind(secret)}")
    fields = _fold(secret)

    version = fields.get("version")
    if version is None:
        version = 0
    elif type(version) is not int or not 0 <= version <= MAX_VERSION:
        found = "an integer out of range" if type(version) is int else _kind(version)
        raise ConfigError(f"{where}: Version must be an integer in 0..{MAX_VERSION}, found {found}")

    text = fields.get("textvalue")
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"{where}: TextValue must be a string, found {_kind(text)}")

    encoded = fields.get("value")
    value = None
    if encoded is not None:
        if not isinstance(encoded, str):
            raise ConfigError(f"{where}: Value must be a base64 string, found {_kind(encoded)}")
        try:
            value = decode_base64(encoded)  # Go's rules; CR and LF skipped
        except ValueError:
            # Say what is wrong without echoing the text.
            raise ConfigError(
                f"{where}: Value is not standard padded base64 (use TextValue for plain text)"
            ) from None

    if version == 0:
        return None
    if text:
        return SecretValue(value=text.encode("utf-8"), version=version)
    if value is None:
        return None
    return SecretValue(value=value, version=version)


def _fold(raw: dict[str, Any]) -> dict[str, Any]:
    # Go matches member names case-insensitively; of repeated names the last one wins.
    return {key.lower(): item for key, item in raw.items()}


def _kind(value: Any) -> str:
    # The JSON type of a value, for messages that must not show the value itself.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number that is not an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _quote(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)

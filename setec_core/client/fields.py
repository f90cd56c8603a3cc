"""Dataclass fields filled with secrets by a Store (Go's ``setec:"..."`` struct tags).

Mark fields with :func:`secret_field` and hand the instance to a Store; it fetches the
secrets with the others it declares and fills the fields in::

    @dataclass
    class Secrets:
        api_key: bytes = secret_field("api-key")
        password: str = secret_field("db-password")
        token: Secret = secret_field("token")              # a handle, kept current
        limits: dict[str, int] = secret_field("limits", json=True)
        port: int = 8080                                   # not a secret: untouched

    secrets = Secrets()
    store = Store(client, structs=[(secrets, "prod/app")])  # prod/app/api-key, ...

Field types, chosen by the annotation (``Optional[X]``/``X | None`` is read as ``X``):

- ``bytes``: the value; ``bytearray``: a mutable copy of it;
- ``str``: the value decoded as UTF-8 (an error if it is not UTF-8);
- :class:`~setec_core.client.Secret`: the Store's handle, which follows new versions
  (every other kind is a copy of the value when the Store was built);
- any class with a ``from_bytes(data: bytes)`` classmethod: its result (Python's form
  of Go's ``UnmarshalBinary``; ``int.from_bytes`` does not count, since a secret's
  text is not a big-endian number: use ``json=True`` for numbers);
- with ``json=True``: the value decoded as JSON into ``Any``, ``str``, ``int``,
  ``float``, ``bool``, ``list[...]``, ``dict[str, ...]``, ``datetime``/``date`` (from
  an ISO 8601 string, like Go's ``time.Time``), a dataclass (from a JSON object;
  member names match case-insensitively, unknown members are ignored) or a union of
  these.

A secret field's default is ``None`` unless you give one, so the dataclass can be built
before the Store fills it, and it is left out of the dataclass's ``repr``. Fields
inherited from dataclass bases count; fields of a nested dataclass field do not.

Differences from Go: :meth:`Fields.apply` is all or nothing (Go sets the fields that
worked and reports the others), ``str`` fields must be UTF-8, and a field's
``from_bytes`` or JSON error is reported by its kind, never its text, which could quote
the secret.
"""

from __future__ import annotations

import dataclasses
import datetime
import json as jsonlib
import posixpath
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol, Union

from setec_core.client.secret import Secret
from setec_core.errors import ConfigError, SetecError

#: The dataclass field metadata key that marks a secret field.
METADATA_KEY = "setec"


class FieldsError(ConfigError):
    """:func:`parse_fields` cannot use the object: it is not a dataclass instance, it is
    frozen, or a secret field has an empty name or an unsupported type."""


class NoFieldsError(FieldsError):
    """The dataclass has no :func:`secret_field` fields (Go's ``ErrNoFields``)."""


class FieldsApplyError(SetecError):
    """:meth:`Fields.apply` could not fill some fields, so it filled none.

    The message lists each failure as ``apply "<secret>" to field "<field>": <cause>``;
    :attr:`failures` maps each field name to its cause. Neither quotes a value.
    """

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclasses.dataclass(frozen=True)
class SecretTag:
    """What :func:`secret_field` stores in a field's metadata."""

    name: str
    json: bool = False


def secret_field(
    name: str,
    *,
    json: bool = False,
    default: Any = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that a Store fills with secret ``name``.

    :param name: the secret's base name; the full name is ``prefix/name`` for the prefix
        given with the instance to the Store (or to :func:`parse_fields`).
    :param json: decode the value as JSON into the field's type.
    :param default: the value until the Store fills the field (``None``).
    :param default_factory: makes the default instead, as for :func:`dataclasses.field`.
    :returns: a :func:`dataclasses.field`, left out of the dataclass's ``repr``.
    """
    if not isinstance(name, str):
        raise TypeError(f"a secret name must be a str, not {type(name).__name__}")
    metadata = {METADATA_KEY: SecretTag(name, json)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, repr=False, metadata=metadata)
    return dataclasses.field(default=default, repr=False, metadata=metadata)


class SecretLookup(Protocol):
    """What :meth:`Fields.apply` needs: a Store's ``lookup_secret``."""

    def lookup_secret(self, name: str) -> Secret:
        """The handle of secret ``name``. :raises SetecError: if there is none."""
        ...


class _ConversionError(Exception):
    """Why a value cannot go into a field; the message never quotes the value."""


@dataclasses.dataclass(frozen=True)
class _Spec:
    field: str
    secret: str
    convert: Callable[[Secret], Any]


class Fields:
    """The secret fields of one dataclass instance (made by :func:`parse_fields`)."""

    def __init__(self, obj: Any, specs: list[_Spec]) -> None:
        self._obj = obj
        self._specs = specs

    def secrets(self) -> list[str]:
        """The full secret names, in field order (base classes' fields first)."""
        return [spec.secret for spec in self._specs]

    def apply(self, store: SecretLookup) -> None:
        """Fill every secret field from ``store`` (``store.lookup_secret(name)``).

        All or nothing: if any field fails, none is set.

        :raises FieldsApplyError: listing every field that failed and why.
        """
        values: dict[str, Any] = {}
        failures: dict[str, str] = {}
        messages = []
        for spec in self._specs:
            try:
                handle = store.lookup_secret(spec.secret)
            except SetecError as e:
                cause = f"secret lookup error: {e}"
            else:
                try:
                    values[spec.field] = spec.convert(handle)
                    continue
                except _ConversionError as e:
                    cause = str(e)
            failures[spec.field] = cause
            messages.append(f'apply "{spec.secret}" to field "{spec.field}": {cause}')
        if failures:
            raise FieldsApplyError("; ".join(messages), failures)
        for name, value in values.items():
            setattr(self._obj, name, value)

    def __repr__(self) -> str:
        return f"Fields({type(self._obj).__qualname__}, {self.secrets()})"


def parse_fields(obj: Any, prefix: str = "") -> Fields:
    """The :func:`secret_field` fields of dataclass instance ``obj``.

    :param prefix: joined in front of each base name as by Go's ``path.Join``
        (``("dev/prog", "alpha")`` -> ``dev/prog/alpha``; the result is cleaned).
    :raises FieldsError: if ``obj`` is not a dataclass instance, is frozen, or a secret
        field has an empty name or a type that cannot hold a secret.
    :raises NoFieldsError: if ``obj`` has no secret fields.
    """
    if isinstance(obj, type) or not dataclasses.is_dataclass(obj):
        what = f"the class {obj.__qualname__}" if isinstance(obj, type) else type(obj).__name__
        raise FieldsError(f"value is not a dataclass instance: got {what}")
    if not isinstance(prefix, str):
        raise FieldsError(f"a prefix must be a str, not {type(prefix).__name__}")
    cls = type(obj)
    tagged = [
        (f, tag)
        for f in dataclasses.fields(obj)
        if isinstance(tag := f.metadata.get(METADATA_KEY), SecretTag)
    ]
    if not tagged:
        raise NoFieldsError(
            f"type {cls.__qualname__}: no setec-tagged fields (mark them with secret_field)"
        )
    params = getattr(cls, "__dataclass_params__", None)
    if getattr(params, "frozen", False):
        raise FieldsError(
            f"type {cls.__qualname__} is a frozen dataclass; a Store cannot fill its fields"
        )
    hints, why = _type_hints(cls)
    specs = []
    for f, tag in tagged:
        if not tag.name:
            raise FieldsError(f'empty secret name for tagged field "{f.name}"')
        annotation = hints.get(f.name, f.type)
        if isinstance(annotation, str):
            raise FieldsError(
                f'cannot resolve the type "{annotation}" of tagged field "{f.name}" ({why}); '
                "define the types a dataclass uses at module level"
            )
        convert = _json_converter(annotation) if tag.json else _converter(annotation)
        if convert is None:
            raise FieldsError(
                f'unsupported type {_type_name(annotation)} for tagged field "{f.name}" '
                + (
                    "(with json=True: Any, str, int, float, bool, list, dict, datetime, "
                    "date, a dataclass, or a union of these)"
                    if tag.json
                    else "(use bytes, bytearray, str, Secret, a class with a from_bytes "
                    "classmethod, or json=True)"
                )
            )
        specs.append(_Spec(f.name, _join(prefix, tag.name), convert))
    return Fields(obj, specs)


def _join(prefix: str, base: str) -> str:
    # Go's path.Join: empty elements are dropped, and the result is cleaned (normpath,
    # except that POSIX keeps a leading "//" where Go cleans it to "/").
    joined = posixpath.normpath("/".join(part for part in (prefix, base) if part))
    return "/" + joined.lstrip("/") if joined.startswith("//") else joined


def _type_hints(cls: type) -> tuple[dict[str, Any], str]:
    try:
        return typing.get_type_hints(cls), ""
    except Exception as e:  # evaluating string annotations runs arbitrary expressions
        return {}, f"{type(e).__name__}: {e}"


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


# --- plain fields ----------------------------------------------------------------------


def _converter(tp: Any) -> Callable[[Secret], Any] | None:
    tp = _unwrap_optional(tp)
    if tp is bytes:
        return lambda handle: bytes(handle())
    if tp is bytearray:
        return lambda handle: bytearray(handle())
    if tp is str:
        return _text
    if tp is Secret:
        return lambda handle: handle
    from_bytes = _from_bytes_of(tp)
    if from_bytes is not None:
        return lambda handle: _unmarshal(tp, from_bytes, handle())
    return None


def _text(handle: Secret) -> str:
    try:
        return handle().decode("utf-8")
    except UnicodeDecodeError:
        # Not the codec's message: it quotes the offending byte.
        raise _ConversionError("unmarshal error: the value is not UTF-8 text") from None


def _from_bytes_of(tp: Any) -> Callable[[bytes], Any] | None:
    if not isinstance(tp, type) or typing.get_origin(tp) is not None:
        return None
    owner = next((c for c in tp.__mro__ if "from_bytes" in vars(c)), None)
    if owner is None or owner is int:
        return None
    method = typing.cast(Any, tp).from_bytes
    return method if callable(method) else None


def _unmarshal(tp: type, from_bytes: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return from_bytes(data)
    except Exception as e:  # your from_bytes may raise anything; its message may quote data
        raise _ConversionError(
            f"unmarshal error: {tp.__qualname__}.from_bytes raised {type(e).__name__}"
        ) from None


# --- json fields -----------------------------------------------------------------------

_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_supported(tp: Any) -> bool:
    if tp is Any or tp is object or tp in _JSON_SCALARS:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return all(_json_supported(a) for a in args)
    if tp is list or origin is list:
        return all(_json_supported(a) for a in args)
    if tp is dict or origin is dict:
        return not args or (args[0] is str and _json_supported(args[1]))
    return tp in (datetime.datetime, datetime.date) or (
        isinstance(tp, type) and dataclasses.is_dataclass(tp)
    )


def _json_converter(tp: Any) -> Callable[[Secret], Any] | None:
    if not _json_supported(tp):
        return None

    def convert(handle: Secret) -> Any:
        try:
            doc = jsonlib.loads(handle())
        except jsonlib.JSONDecodeError as e:
            # Only the position: the decoder's message can quote the document.
            raise _ConversionError(
                f"json error: the value is not valid JSON (line {e.lineno}, column {e.colno})"
            ) from None
        except (ValueError, RecursionError):
            raise _ConversionError("json error: the value is not valid JSON") from None
        return _from_json(tp, doc, "")

    return convert


def _from_json(tp: Any, doc: Any, path: str) -> Any:
    """``doc`` (decoded JSON) as a ``tp``; ``path`` says where in the document."""
    if tp is Any or tp is object:
        return doc
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if doc is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message says more than the union's
            return _from_json(options[0], doc, path)
        for arg in options:
            try:
                return _from_json(arg, doc, path)
            except _ConversionError:
                continue
        raise _mismatch(doc, tp, path)
    base = origin or tp
    if base is type(None) and doc is None:
        return None
    if base is bool and isinstance(doc, bool):
        return doc
    if base is int and type(doc) is int:
        return doc
    if base is float and type(doc) in (int, float):
        return float(doc)
    if base is str and isinstance(doc, str):
        return doc
    if base is list and isinstance(doc, list):
        if not args:
            return doc
        return [_from_json(args[0], item, f"{path}[{i}]") for i, item in enumerate(doc)]
    if base is dict and isinstance(doc, dict):
        if not args:
            return doc
        # Member names of a dict can be data: "{}" rather than the key in the path.
        return {key: _from_json(args[1], item, f"{path}{{}}") for key, item in doc.items()}
    if base in (datetime.datetime, datetime.date) and isinstance(doc, str):
        try:
            return base.fromisoformat(doc)
        except ValueError:
            # Not the parser's message: it quotes the string.
            raise _ConversionError(
                f"json error: a string{_at(path)} is not an ISO 8601 {base.__name__}"
            ) from None
    if isinstance(base, type) and dataclasses.is_dataclass(base) and isinstance(doc, dict):
        return _dataclass_from_json(base, doc, path)
    raise _mismatch(doc, tp, path)


def _dataclass_from_json(cls: type, doc: dict[str, Any], path: str) -> Any:
    # As Go decodes a struct: exact member names first, then case-insensitively; the
    # last of repeated members wins; unknown members are ignored.
    fields = [f for f in dataclasses.fields(cls) if f.init]
    exact = {f.name: f for f in fields}
    folded = {f.name.lower(): f for f in fields}
    hints, _ = _type_hints(cls)
    kwargs = {}
    for key, item in doc.items():
        f = exact.get(key) or folded.get(key.lower())
        if f is not None:
            kwargs[f.name] = _from_json(hints.get(f.name, Any), item, f"{path}.{f.name}")
    try:
        return cls(**kwargs)
    except Exception as e:  # __post_init__ may raise anything; its message may quote data
        raise _ConversionError(
            f"json error: cannot build {cls.__qualname__}{_at(path)} from the JSON object "
            f"({type(e).__name__})"
        ) from None


def _mismatch(doc: Any, tp: Any, path: str) -> _ConversionError:
    return _ConversionError(
        f"json error: cannot decode {_json_kind(doc)}{_at(path)} into {_type_name(tp)}"
    )


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _json_kind(doc: Any) -> str:
    if doc is None:
        return "null"
    if isinstance(doc, bool):
        return "a boolean"
    if isinstance(doc, int | float):
        return "a number"
    if isinstance(doc, str):
        return "a string"
    if isinstance(doc, list):
        return "an array"
    return "an object"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__qualname__
    return repr(tp).replace("typing.", "")

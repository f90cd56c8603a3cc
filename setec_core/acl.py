"""Access rules: actions, star-only patterns and rule sets (docs/api.md §6.1-6.2).

A :class:`Rule` allows ``(action, name)`` when the action is one of its actions and one
of its patterns matches the whole name. A caller is allowed when any of its rules
allows; there are no deny rules. The only pattern metacharacter is ``*``, which matches
any run of characters, ``/`` included. ``fnmatch`` is not used because it also treats
``?`` and ``[`` as special.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from setec_core.errors import InvalidRequestError


class Action(enum.StrEnum):
    """The actions a rule can grant: Go setec's six, then ours. ``delete`` covers
    delete and delete-version; ``set-info`` sets a secret's description, which Go setec
    does not have (docs/api.md §9.5)."""

    GET = "get"
    INFO = "info"
    PUT = "put"
    CREATE_VERSION = "create-version"
    ACTIVATE = "activate"
    DELETE = "delete"
    SET_INFO = "set-info"


ALL_ACTIONS: tuple[Action, ...] = tuple(Action)


def match(pattern: str, name: str) -> bool:
    """Report whether ``pattern`` matches all of ``name``; ``*`` matches any run of
    characters (including ``/`` and the empty string), everything else matches itself."""
    return _compile(pattern)(name)


def _compile(pattern: str) -> _Matcher:
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return _Exact(pattern)
    return _Star(tuple(pieces))


class _Matcher:
    __slots__ = ()

    def __call__(self, name: str) -> bool:
        raise NotImplementedError


class _Exact(_Matcher):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, name: str) -> bool:
        return name == self.text


class _Star(_Matcher):
    __slots__ = ("first", "last", "middle", "min_len")

    def __init__(self, pieces: tuple[str, ...]) -> None:
        self.first = pieces[0]
        self.last = pieces[-1]
        self.middle = pieces[1:-1]
        self.min_len = sum(len(p) for p in pieces)

    def __call__(self, name: str) -> bool:
        if not self.min_len:
            return True  # "*", "**", ...: every name
        if len(name) < self.min_len or not name.startswith(self.first):
            return False
        if not name.endswith(self.last):
            return False
        # Leftmost-first search of the middle pieces is correct for star-only globs:
        # taking the earliest occurrence never rules out a later match.
        pos = len(self.first)
        end = len(name) - len(self.last)
        for piece in self.middle:
            found = name.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True


@dataclass(frozen=True, init=False)
class Rule:
    """One grant: the ``actions`` allowed on secrets whose names match ``secrets``.

    Unknown action strings are kept and match nothing, as in Go setec, so a policy
    written for a newer server does not break an older one.
    """

    actions: frozenset[str]
    secrets: tuple[str, ...]
    _matchers: tuple[_Matcher, ...] = field(init=False, repr=False, compare=False)

    def __init__(self, actions: Iterable[str], secrets: Iterable[str]) -> None:
        object.__setattr__(self, "actions", frozenset(str(a) for a in actions))
        object.__setattr__(self, "secrets", tuple(secrets))
        object.__setattr__(self, "_matchers", tuple(_compile(p) for p in self.secrets))

    def allows(self, action: str, name: str) -> bool:
        """Report whether this rule grants ``action`` on the secret ``name``."""
        return action in self.actions and any(m(name) for m in self._matchers)

    @classmethod
    def from_json(cls, obj: Any) -> Rule:
        """Build a rule from its JSON form, decoded the way Go does it.

        Keys match ``action`` and ``secret`` case-insensitively (the last one wins),
        unknown keys are ignored and ``null`` gives an empty rule.

        :raises InvalidRequestError: if the value is not an object, or ``action`` or
            ``secret`` is not a list of strings.
        """
        if obj is None:
            return cls((), ())
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(
                f"access rule must be a JSON object, not {type(obj).__name__}"
            )
        actions: Any = None
        secrets: Any = None
        for key, value in obj.items():
            lowered = str(key).lower()
            if lowered == "action":
                actions = value
            elif lowered == "secret":
                secrets = value
        return cls(_string_list(actions, "action"), _string_list(secrets, "secret"))

    def to_json(self) -> dict[str, list[str]]:
        """Return the rule in the JSON form that :meth:`from_json` reads."""
        return {"action": sorted(self.actions), "secret": list(self.secrets)}


def _string_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequestError(
            f'access rule field "{key}" must be a list of strings, e.g. ["get", "info"]'
        )
    return list(value)


def rules_allow(rules: Iterable[Rule], action: str, name: str) -> bool:
    """Report whether any of ``rules`` grants ``action`` on ``name``."""
    return any(rule.allows(action, name) for rule in rules)

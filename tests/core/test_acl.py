"""Access rules and star-only patterns (docs/api.md §6.1-6.2)."""

from __future__ import annotations

import pytest

from setec_core import ALL_ACTIONS, Action, InvalidRequestError, Rule, make_caller, match


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("dev/*", "dev/foo", True),
        ("dev/*", "dev/bar/quux", True),  # * spans slashes
        ("dev/*", "dev/", True),  # * matches the empty run
        ("dev/*", "dev", False),
        ("*", "", True),
        ("*", "anything/at/all", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("a*b*c", "abcX", False),  # anchored at the end
        ("*c", "abc", True),
        ("a*a", "a", False),  # pieces may not overlap
        ("a*a", "aa", True),
        ("control/foo", "control/foo", True),
        ("control/foo", "control/foo2", False),
        ("control/foo", "Control/foo", False),  # case-sensitive
        ("file?.txt", "file1.txt", False),  # ? is literal
        ("file?.txt", "file?.txt", True),
        ("[ab]", "a", False),  # brackets are literal
        ("[ab]", "[ab]", True),
        ("**", "", True),
        ("x*y*z*", "xyz", True),
        ("ünï/*", "ünï/cödé", True),
    ],
)
def test_match(pattern: str, name: str, expected: bool) -> None:
    """Only * is special; it matches any run of characters, / included (docs/api.md §6.2)."""
    assert match(pattern, name) is expected


RULE_GET = Rule(["get"], ["control/foo", "control/bar"])
RULE_STAR = Rule(["info", "put", "create-version", "activate"], ["*"])
RULE_DELETE = Rule(["delete"], ["dev/*"])


@pytest.mark.parametrize(
    ("rule", "action", "name", "expected"),
    [
        # Go's first case: get on control/*
        (RULE_GET, "get", "control/foo", True),
        (RULE_GET, "get", "control/bar", True),
        (RULE_GET, "get", "control/quux", False),
        (RULE_GET, "get", "something/else", False),
        (RULE_GET, "get", "dev/foo", False),
        (RULE_GET, "info", "control/foo", False),
        # Go's second case: every action but get, on *
        (RULE_STAR, "info", "x", True),
        (RULE_STAR, "put", "control/foo", True),
        (RULE_STAR, "create-version", "dev/bar/quux", True),
        (RULE_STAR, "activate", "", True),
        (RULE_STAR, "get", "x", False),
        # Go's third case: delete on dev/*
        (RULE_DELETE, "delete", "dev/foo", True),
        (RULE_DELETE, "delete", "dev/bar/quux", True),
        (RULE_DELETE, "delete", "control/foo", False),
        (RULE_DELETE, "delete", "control/bar", False),
        (RULE_DELETE, "delete", "something/else", False),
        (RULE_DELETE, "delete", "dev", False),
    ],
)
def test_rule_allows(rule: Rule, action: str, name: str, expected: bool) -> None:
    """A rule allows its actions on names its patterns match."""
    assert rule.allows(action, name) is expected


def test_any_rule_allows() -> None:
    """A caller is allowed iff some rule allows; get is not in RULE_STAR."""
    caller = make_caller(RULE_GET, RULE_STAR, RULE_DELETE)
    assert caller.allows("get", "control/foo")
    assert caller.allows("put", "anything")
    assert caller.allows("delete", "dev/x")
    assert not caller.allows("get", "anything")
    assert not caller.allows("delete", "prod/x")


def test_no_rules_deny_everything() -> None:
    """An empty rule set denies every action (docs/api.md §6.1)."""
    caller = make_caller()
    assert not any(caller.allows(a, "x") for a in ALL_ACTIONS)


def test_unknown_actions_match_nothing() -> None:
    """Unknown action strings are harmless; actions have no wildcard (docs/api.md §6.1)."""
    rule = Rule(["read", "*"], ["*"])
    assert not any(rule.allows(a, "x") for a in ALL_ACTIONS)


def test_actions_are_the_six_of_the_spec() -> None:
    """Exactly Go's six action strings (docs/api.md §6.1), then ours (set-info, §9.5)."""
    assert [a.value for a in Action] == [
        "get",
        "info",
        "put",
        "create-version",
        "activate",
        "delete",
        "set-info",
    ]


@pytest.mark.parametrize(
    ("doc", "actions", "secrets"),
    [
        ({"action": ["get"], "secret": ["a/*"]}, {"get"}, ("a/*",)),
        ({"Action": ["get"], "SECRET": ["x"]}, {"get"}, ("x",)),  # keys are case-insensitive
        ({"action": ["get"], "extra": 1}, {"get"}, ()),  # unknown keys ignored
        (None, set(), ()),  # null is an empty rule
        ({"action": None, "secret": None}, set(), ()),
        ({"action": ["put"], "action ": ["x"]}, {"put"}, ()),
    ],
)
def test_rule_from_json(doc: object, actions: set[str], secrets: tuple[str, ...]) -> None:
    """Rules decode Go-style: case-insensitive keys, unknown keys ignored."""
    rule = Rule.from_json(doc)
    assert rule.actions == actions
    assert rule.secrets == secrets


@pytest.mark.parametrize(
    "doc",
    [
        {"action": "get", "secret": ["*"]},  # a bare string, not a list
        {"action": ["get"], "secret": "*"},
        {"action": [1], "secret": ["*"]},
        ["get"],
        "get",
    ],
)
def test_malformed_rule_is_an_error(doc: object) -> None:
    """A rule that does not decode is an error, never an empty grant (docs/api.md §6.1)."""
    with pytest.raises(InvalidRequestError, match="rule"):
        Rule.from_json(doc)


def test_rule_json_round_trip() -> None:
    """to_json produces what from_json reads back."""
    rule = Rule(["get", "info"], ["a/*", "b"])
    assert Rule.from_json(rule.to_json()) == rule

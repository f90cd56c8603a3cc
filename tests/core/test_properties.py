"""Property-based checks: pattern matching against a regex oracle, and the Database
against a small reference model of the version rules (docs/api.md §4)."""

from __future__ import annotations

import re

import hypothesis.strategies as st
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from setec_core import (
    MAX_VERSION,
    InvalidRequestError,
    NotFound,
    SecretInfo,
    SecretValue,
    VersionClaimed,
    match,
)
from setec_core.testing import SUPERUSER, new_database

ALPHABET = st.sampled_from(list("ab/*?[."))


@given(st.text(ALPHABET, max_size=8), st.text(ALPHABET.filter(lambda c: c != "*"), max_size=10))
def test_match_agrees_with_regex_oracle(pattern: str, name: str) -> None:
    """match() is a full match where only * is special (any run of characters)."""
    oracle = re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), name, re.S)
    assert match(pattern, name) is (oracle is not None)


NAMES = st.sampled_from(["a", "b", "dir/c"])
VALUES = st.sampled_from([b"", b"x", b"y", b"z"])
VERSIONS = st.sampled_from([1, 2, 3, 5, 100, MAX_VERSION])


class DatabaseMachine(RuleBasedStateMachine):
    """Random sequences of operations give the same results as a reference model:
    name -> {versions, active, latest, deleted}."""

    def __init__(self) -> None:
        super().__init__()
        self.db = new_database()
        self.model: dict[str, dict[str, object]] = {}

    def teardown(self) -> None:
        self.db.close()

    @rule(name=NAMES, value=VALUES)
    def put(self, name: str, value: bytes) -> None:
        m = self.model.get(name)
        if m is None:
            self.model[name] = {"versions": {1: value}, "active": 1, "latest": 1, "deleted": set()}
            assert self.db.put(SUPERUSER, name, value) == 1
            return
        versions = m["versions"]
        latest = m["latest"]
        assert isinstance(versions, dict)
        assert isinstance(latest, int)
        if versions.get(latest) == value:
            assert self.db.put(SUPERUSER, name, value) == latest
        elif latest == MAX_VERSION:
            try:
                self.db.put(SUPERUSER, name, value)
                raise AssertionError("put past the maximum version succeeded")
            except InvalidRequestError:
                pass
        else:
            versions[latest + 1] = value
            m["latest"] = latest + 1
            assert self.db.put(SUPERUSER, name, value) == latest + 1

    @rule(name=NAMES, version=VERSIONS, value=VALUES)
    def create_version(self, name: str, version: int, value: bytes) -> None:
        m = self.model.get(name)
        if m is None:
            self.model[name] = {
                "versions": {version: value},
                "active": version,
                "latest": version,
                "deleted": set(),
            }
            self.db.create_version(SUPERUSER, name, version, value)
            return
        versions, deleted = m["versions"], m["deleted"]
        assert isinstance(versions, dict)
        assert isinstance(deleted, set)
        if version in versions or version in deleted:
            try:
                self.db.create_version(SUPERUSER, name, version, value)
                raise AssertionError("claimed version was created")
            except VersionClaimed:
                return
        versions[version] = value
        m["active"] = version
        m["latest"] = max(int(m["latest"]), version)  # type: ignore[call-overload]
        self.db.create_version(SUPERUSER, name, version, value)

    @rule(name=NAMES, version=VERSIONS)
    def activate(self, name: str, version: int) -> None:
        m = self.model.get(name)
        if m is None or version not in m["versions"]:  # type: ignore[operator]
            try:
                self.db.activate(SUPERUSER, name, version)
                raise AssertionError("activated a missing version")
            except NotFound:
                return
        m["active"] = version
        self.db.activate(SUPERUSER, name, version)

    @rule(name=NAMES, version=VERSIONS)
    def delete_version(self, name: str, version: int) -> None:
        m = self.model.get(name)
        expected: type[Exception] | None = None
        if m is None:
            expected = NotFound
        elif version == m["active"]:
            expected = InvalidRequestError
        elif version not in m["versions"]:  # type: ignore[operator]
            expected = NotFound
        if expected is not None:
            try:
                self.db.delete_version(SUPERUSER, name, version)
                raise AssertionError("delete_version should have failed")
            except expected:
                return
        assert m is not None
        del m["versions"][version]  # type: ignore[attr-defined]
        m["deleted"].add(version)  # type: ignore[attr-defined]
        self.db.delete_version(SUPERUSER, name, version)

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        self.model.pop(name, None)
        self.db.delete(SUPERUSER, name)

    @invariant()
    def same_state(self) -> None:
        expected = [
            SecretInfo(n, tuple(sorted(m["versions"])), m["active"])  # type: ignore[call-overload]
            for n, m in sorted(self.model.items())
        ]
        assert self.db.list(SUPERUSER) == expected
        for n, m in self.model.items():
            versions = m["versions"]
            assert isinstance(versions, dict)
            active = m["active"]
            assert self.db.get(SUPERUSER, n) == SecretValue(versions[active], active)  # type: ignore[arg-type]


TestDatabaseMachine = DatabaseMachine.TestCase
TestDatabaseMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)

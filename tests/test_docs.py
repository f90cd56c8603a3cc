"""The documentation's examples run (docs/plugins.md's KMS plugin passes the contract),
the product cites only its own documentation, and the API reference has every reason
text the server sends."""

from __future__ import annotations

import ast
import os
import re
import types
from pathlib import Path

import pytest

from setec_core import ConfigError, Database, KeyProvider, Plugins
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.testing import SUPERUSER, KeyProviderContract

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _plugin_module() -> types.ModuleType:
    text = (DOCS / "plugins.md").read_text()
    section = text.split("## Example: a custom KMS plugin", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    module = types.ModuleType("setec_keyfile")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


KEYFILE = _plugin_module()


def _key_file(tmp_path: Path, name: str = "kek") -> Path:
    path = tmp_path / name
    path.write_text(os.urandom(32).hex())
    path.chmod(0o600)
    return path


class TestDocsKeyFilePlugin(KeyProviderContract):
    """The example plugin in docs/plugins.md meets the KeyProvider contract."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> KeyProvider:
        return KEYFILE.KeyFileKeyProvider.from_uri(f"keyfile://{_key_file(tmp_path)}")  # type: ignore[no-any-return]

    @pytest.fixture
    def other_provider(self, tmp_path: Path) -> KeyProvider:
        return KEYFILE.KeyFileKeyProvider.from_uri(f"keyfile://{_key_file(tmp_path, 'other')}")  # type: ignore[no-any-return]


def test_docs_plugin_opens_a_database(tmp_path: Path) -> None:
    """Registered as a plugin, the example is selected by its scheme and holds a database."""
    plugins = Plugins.load([KEYFILE])
    uri = f"keyfile://{_key_file(tmp_path)}"
    state = tmp_path / "state"
    with Database.open(state, key=uri, plugins=plugins) as db:
        db.put(SUPERUSER, "a", b"1")
    with Database.open(state, key=uri, plugins=plugins) as db:
        assert db.get(SUPERUSER, "a").value == b"1"


def test_docs_plugin_refuses_loose_key_file(tmp_path: Path) -> None:
    """The example refuses a key file others can read, saying what to do."""
    path = _key_file(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Plugins.load([KEYFILE]).key_provider(f"keyfile://{path}")


def test_docs_plugin_with_memory_audit(tmp_path: Path) -> None:
    """The example works with any storage, e.g. memory."""
    plugins = Plugins.load([KEYFILE])
    key = plugins.key_provider(f"keyfile://{_key_file(tmp_path)}")
    with Database(plugins.storage("memory://"), key, AuditLog(MemoryAuditSink())) as db:
        assert db.put(SUPERUSER, "x", b"y") == 1


# --- the product stands alone ---------------------------------------------------------

#: What the product is made of: every file here must make sense without the team's
#: working material, which lives outside the repository.
PRODUCT = ("README.md", "docs", "setec_core", "setec_plugins", "setec_cli", "tests", "bench")
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
# Built from pieces so that this file does not cite what it forbids.
_SECTION = "\u00a7"
_WORKING_MATERIAL = re.compile(
    "|".join(
        [
            r"\.\./" + "shared",
            "shared/" + r"(SPEC|ARCHITECTURE|STYLE|TESTING|PERF)",
            r"\b(" + "SPEC|ARCHITECTURE|PERF-BASELINE|STYLE|TESTING" + r")\.md",
            r"\b[Ii]" + r"ssue [0-9]+\b",
        ]
    )
)
_SECTION_NUMBER = re.compile(_SECTION + r"\s?[0-9]")
_PROTOCOL = "api" + ".md"
_PROTOCOL_CITE = re.compile(_SECTION + r"([0-9]+(?:\.[0-9]+)*)(?:-([0-9]+(?:\.[0-9]+)*))?")


def _product_lines() -> list[tuple[str, int, str]]:
    found = []
    for top in PRODUCT:
        base = ROOT / top
        paths = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in paths:
            if not path.is_file() or _SKIPPED_DIRS & set(path.parts):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary: no prose in it
            rel = path.relative_to(ROOT).as_posix()
            found += [(rel, n, line) for n, line in enumerate(text.splitlines(), 1)]
    return found


def test_the_product_cites_no_working_material() -> None:
    """Code, docs, tests and benchmarks never point at the team's working material (its
    files, their section numbers, issue numbers): where a rule matters, the product
    states it or cites its own documentation, e.g. docs/api.md's numbered sections."""
    bad = []
    for rel, n, line in _product_lines():
        if _WORKING_MATERIAL.search(line):
            bad.append(f"{rel}:{n}: {line.strip()}")
        elif _SECTION_NUMBER.search(line) and rel != f"docs/{_PROTOCOL}" and _PROTOCOL not in line:
            bad.append(f"{rel}:{n}: {line.strip()} (a section number, but of what?)")
    assert not bad, "cite the product's own docs instead:\n" + "\n".join(bad)


def test_protocol_citations_name_real_sections() -> None:
    """Every section a line cites next to docs/api.md exists there."""
    text = (DOCS / _PROTOCOL).read_text()
    sections = set(re.findall(r"^#{2,4} ([0-9]+(?:\.[0-9]+)*) ", text, re.M))
    assert {"1", "2", "3", "4", "8"} <= sections
    bad = []
    for rel, n, line in _product_lines():
        if _PROTOCOL not in line or rel == f"docs/{_PROTOCOL}":
            continue
        for start, end in _PROTOCOL_CITE.findall(line):
            missing = {start, end} - sections - {""}
            if missing:
                bad.append(f"{rel}:{n}: no section {', '.join(sorted(missing))}")
    assert not bad, "\n".join(bad)


# --- every reason the server sends is in the API reference -----------------------------

#: Calls that carry a reason text to the wire, and the position of that argument: the
#: status table, the app's and the front's early answers, the decoder's 400s, and the
#: errors the Database and the authorizers raise for the status table to map.
_REASON_CALLS = {
    "Status": 1,
    "Sentinel": 2,
    "_Reply": 1,
    "_error": 1,
    "Refused": 1,
    "error_answer": 1,
    "Refusal": 1,
    "refuse": 1,
    "_refuse_after_queue": 1,
    "BadRequestError": 0,
    "InvalidRequestError": 0,
    "InvalidVersionError": 0,
    "AccessDenied": 0,
    "UnavailableError": 0,
}
#: Counted only in authorizer modules: raised elsewhere on the server's side (by a KMS
#: plugin, say), they stop the server at start-up rather than answer a request.
_AUTHORIZER_ONLY = {"AccessDenied", "UnavailableError"}
#: Messages that never reach the wire, by a phrase in them: the Database's checks of
#: Python types and ranges, which every decoded request passes, and the rule decoder's,
#: which the authorizers replace with their own 403 (docs/api.md §5.1).
_NOT_ON_THE_WIRE = (
    "must be a string, not",
    "must be an integer, not",
    "must be bytes",
    "is out of range",
    "not valid Unicode",
    "access rule",
    # The Database's checks of a write's guards, by their Python argument names: the
    # decoder has refused a malformed IfActiveVersion or IfVersions before.
    "if_active_version",
    "if_versions",
)
#: The parts of setec_core that never answer a request: the client and the test helpers.
_CLIENT_SIDE = {"client", "testing"}


def _server_modules() -> list[Path]:
    core = [
        path
        for path in sorted((ROOT / "setec_core").rglob("*.py"))
        if not _CLIENT_SIDE & set(path.relative_to(ROOT / "setec_core").parts)
    ]
    return core + sorted((ROOT / "setec_plugins").glob("*.py"))


class _Reasons(ast.NodeVisitor):
    """Collects the literal pieces of every reason a module passes to a reason call;
    the ``{...}`` parts of f-strings, being values, are left out."""

    def __init__(self, tree: ast.Module, functions: dict[str, list[ast.expr]]) -> None:
        self.tree = tree
        self.functions = functions
        self.is_authorizer = any(
            isinstance(node, ast.ClassDef)
            and any(getattr(base, "id", None) == "Authorizer" for base in node.bases)
            for node in tree.body
        )
        self.scopes: list[ast.AST] = [tree]
        self.found: list[tuple[str, int, list[str]]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scopes.append(node)
        self.generic_visit(node)
        self.scopes.pop()

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        at = _REASON_CALLS.get(name)
        wanted = name not in _AUTHORIZER_ONLY or self.is_authorizer
        reason = node.args[at] if at is not None and wanted and len(node.args) > at else None
        if reason is not None and not isinstance(reason, ast.Starred):
            pieces = self.pieces(reason, set())
            if pieces:
                self.found.append((name, node.lineno, pieces))
        self.generic_visit(node)

    def pieces(self, node: ast.AST, seen: set[str]) -> list[str]:
        if isinstance(node, ast.Constant):
            return [node.value] if isinstance(node.value, str) else []
        if isinstance(node, ast.JoinedStr):
            return [str(v.value) for v in node.values if isinstance(v, ast.Constant)]
        if isinstance(node, ast.BinOp):
            return self.pieces(node.left, seen) + self.pieces(node.right, seen)
        if isinstance(node, ast.IfExp):
            return self.pieces(node.body, seen) + self.pieces(node.orelse, seen)
        if isinstance(node, ast.BoolOp):
            return [p for value in node.values for p in self.pieces(value, seen)]
        if isinstance(node, (ast.Dict, ast.List, ast.Tuple)):
            items = node.values if isinstance(node, ast.Dict) else node.elts
            return [p for item in items for p in self.pieces(item, seen)]
        if isinstance(node, ast.Subscript):
            return self.pieces(node.value, seen)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            returns = _returns(self.tree).get(node.func.id) or self.functions.get(node.func.id, [])
            return [p for value in returns for p in self.pieces(value, seen)]
        if isinstance(node, ast.Name) and node.id not in seen:
            seen = seen | {node.id}
            values = self.assigned(self.scopes[-1], node.id) or self.assigned(self.tree, node.id)
            return [p for value in values for p in self.pieces(value, seen)]
        return []

    @staticmethod
    def assigned(scope: ast.AST, name: str) -> list[ast.expr]:
        nodes = scope.body if isinstance(scope, ast.Module) else list(ast.walk(scope))
        values = []
        for node in nodes:
            targets: list[ast.expr]
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            else:
                continue
            named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
            if named and node.value is not None:
                values.append(node.value)
        return values


def _returns(tree: ast.Module) -> dict[str, list[ast.expr]]:
    """What each module-level function of ``tree`` returns, by function name."""
    functions = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            returns = [n.value for n in ast.walk(node) if isinstance(n, ast.Return)]
            functions[node.name] = [value for value in returns if value is not None]
    return functions


def _wire_reasons() -> list[tuple[str, str, int, list[str]]]:
    """``(module, call, line, literal pieces)`` of every reason that reaches the wire."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _server_modules()}
    functions: dict[str, list[ast.expr]] = {}
    for tree in trees.values():
        functions.update(_returns(tree))
    found = []
    for path, tree in trees.items():
        visitor = _Reasons(tree, functions)
        visitor.visit(tree)
        rel = path.relative_to(ROOT).as_posix()
        found += [(rel, name, line, pieces) for name, line, pieces in visitor.found]
    return [
        reason
        for reason in found
        if not any(phrase in piece for piece in reason[3] for phrase in _NOT_ON_THE_WIRE)
    ]


def test_every_reason_text_is_in_the_api_reference() -> None:
    """Every reason text the server can send (the status table's, the decoder's, the
    app's and the front's early answers, the Database's 400s, the authorizers' 403s and
    503s) appears in docs/api.md, so adding one without documenting it fails here."""
    from setec_core.http.status import STATUS_TABLE

    doc = " ".join((DOCS / _PROTOCOL).read_text().split())
    table = [s.reason for _, s in STATUS_TABLE if s.reason]
    reasons = [("setec_core/http/status.py", "STATUS_TABLE", 0, [r]) for r in table]
    reasons += _wire_reasons()
    by_call: dict[str, int] = {}
    for _, name, _, _ in reasons:
        by_call[name] = by_call.get(name, 0) + 1
    # The sources this test must see; too few means a refactoring hid them from it.
    assert by_call.get("STATUS_TABLE", 0) >= 5, by_call
    assert by_call.get("BadRequestError", 0) >= 8, by_call
    missing = []
    for rel, name, line, pieces in reasons:
        for piece in pieces:
            text = " ".join(piece.split())
            if len(text) >= 4 and text not in doc:
                missing.append(f"{rel}:{line}: {name}(...) sends {text!r}")
    where = f"docs/{_PROTOCOL}, section 5.1"
    assert not missing, f"document these in {where}:\n" + "\n".join(missing)

"""The ``policy`` authorizer: bearer tokens and rules from a JSON policy file.

For networks without Tailscale. Each client sends ``Authorization: Bearer TOKEN``; the
policy file (option ``policy_file``, flag ``--policy-file``) maps the SHA-256 of each
token to a principal and its rules::

    {
      "tokens": [
        {
          "comment": "Alice's laptop",
          "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
          "user": "alice@example.com",
          "rules": [{"action": ["get", "info", "put", "activate", "delete"],
                     "secret": ["*"]}]
        },
        {
          "sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
          "tags": ["tag:ci"],
          "hostname": "ci-runner",
          "rules": [{"action": ["get"], "secret": ["ci/*"]}]
        }
      ]
    }

- ``tokens`` (required): a list of entries. Each entry has:
- ``sha256`` (required): 64 hex digits, the SHA-256 of the token's UTF-8 bytes
  (:func:`hash_token`). No two entries may share one.
- exactly one of ``user`` (a non-empty string, like a login name) and ``tags`` (a
  non-empty list of non-empty strings, like ``"tag:ci"``): the principal written to the
  audit log. As with Tailscale, a user is a person and tags are a machine's role.
- ``rules`` (required, may be empty): rules exactly as in a tailnet grant (docs/api.md §6.1):
  ``{"action": [...], "secret": [...]}``, keys matched case-insensitively.
- ``hostname`` (optional): the hostname written to the audit log (default empty).
- ``comment`` (optional): ignored; say whose token it is.

Any other key, at the top or in an entry, is an error, so that a misspelt ``rules``
cannot silently grant nothing (or a misspelt ``user`` be read as something else). The
audit IP is the connection's peer address.

The file holds only hashes of high-entropy tokens, so reading it does not let anyone
call the server; still, keep it writable only by root, since whoever can edit it can
grant themselves anything, and send tokens only over TLS. Make a token and its entry
with :func:`new_token` and :func:`policy_entry`. The server re-reads the file on SIGHUP
(:meth:`PolicyAuthorizer.reload`); a broken new file is refused and the old policy
stays in force.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import click

from setec_core.acl import Action, Rule
from setec_core.authz import Authorizer, Caller, Principal
from setec_core.errors import AccessDenied, ConfigError, InvalidRequestError
from setec_core.hookspecs import hookimpl
from setec_core.options import Option, check_option_names
from setec_core.peer import Peer
from setec_core.server_info import DEFAULT_SERVER, ServerInfo

log = logging.getLogger("setec.authz.policy")

#: The prefix of tokens made by :func:`new_token`, so that a leaked one is recognisable
#: (secret scanners can look for it).
TOKEN_PREFIX = "setec_"  # noqa: S105 - a public prefix, not a secret

_DENIED = "access denied: missing or unknown bearer token"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TOP_KEYS = frozenset({"tokens", "comment"})
_ENTRY_KEYS = frozenset({"sha256", "user", "tags", "hostname", "rules", "comment"})


def new_token() -> str:
    """Return a new random bearer token: :data:`TOKEN_PREFIX` and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of ``token``'s UTF-8 bytes, as the policy file holds it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def policy_entry(
    token: str,
    *,
    user: str = "",
    tags: Iterable[str] = (),
    hostname: str = "",
    rules: Iterable[Rule | Mapping[str, Any]] = (),
    comment: str = "",
) -> dict[str, Any]:
    """Return the policy-file entry for ``token`` (only its hash is included), ready to
    paste into the ``tokens`` list.

    :param user: the principal's user; give exactly one of ``user`` and ``tags``.
    :param tags: the principal's tags.
    :param hostname: the hostname for the audit log.
    :param rules: :class:`Rule` objects or their JSON form.
    :param comment: a note saying whose token it is.
    :raises ConfigError: if both or neither of ``user`` and ``tags`` are given, or a
        rule is malformed.
    """
    entry: dict[str, Any] = {}
    if comment:
        entry["comment"] = comment
    entry["sha256"] = hash_token(token)
    tag_list = list(tags)
    if bool(user) == bool(tag_list):
        raise ConfigError("a policy entry needs exactly one of a user and tags")
    if user:
        entry["user"] = user
    else:
        entry["tags"] = tag_list
    if hostname:
        entry["hostname"] = hostname
    try:
        entry["rules"] = [
            (r if isinstance(r, Rule) else Rule.from_json(r)).to_json() for r in rules
        ]
    except InvalidRequestError as e:
        raise ConfigError(f"bad rule for a policy entry: {e}") from None
    return entry


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal
    rules: tuple[Rule, ...]


class PolicyAuthorizer(Authorizer):
    """Identifies callers by bearer token, from a policy file (see the module docs).

    :param path: the policy file.
    :raises ConfigError: if the file cannot be read or is invalid; the message names the
        file, the entry and what is wrong.
    """

    name = "policy"
    options = (
        Option(
            "--policy-file",
            "JSON policy of bearer tokens and rules; reloaded on SIGHUP.",
            metavar="PATH",
        ),
        Option(
            "--insecure-http",
            "Take bearer tokens over plain HTTP on a non-loopback address (they travel "
            "in clear; use TLS instead).",
            type=bool,
            default=False,
        ),
    )

    def __init__(self, path: str) -> None:
        self.path = path
        self._reload_lock = threading.Lock()
        # Replaced whole on reload; request threads read it without a lock.
        self._entries = load_policy(path)
        log.info("policy file %s: %d tokens", path, len(self._entries))

    def __repr__(self) -> str:
        return f"PolicyAuthorizer({self.path!r})"

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> PolicyAuthorizer:
        """Build from ``policy_file``.

        Bearer tokens are credentials: on an address other hosts can reach, the server
        must speak TLS, unless ``insecure_http`` says the operator knows the tokens
        travel in clear (then a warning is logged).

        :raises ConfigError: if ``policy_file`` is not given or the file is invalid, or
            tokens would cross the network in clear without ``insecure_http``.
        """
        check_option_names(cls, options, f"authorizer {cls.name!r}")
        path = options.get("policy_file")
        if not path:
            raise ConfigError(
                "the policy authorizer needs --policy-file (or SETEC_POLICY_FILE): a JSON "
                "file of token hashes and rules (see setec_plugins.policy_authz)"
            )
        if not server.tls and not server.is_local:
            if not options.get("insecure_http"):
                raise ConfigError(
                    f"the policy authorizer takes bearer tokens, and --listen {server.listen!r} "
                    "is reachable from other hosts without TLS, so tokens would cross "
                    "the network in clear; give --tls-cert and --tls-key, listen on "
                    "loopback behind a TLS proxy, or add --insecure-http if the network "
                    "itself is encrypted"
                )
            log.warning(
                "INSECURE: bearer tokens are accepted over plain HTTP on %s "
                "(--insecure-http); anyone on the network path can read and reuse them",
                server.listen,
            )
        return cls(str(path))

    def identify(self, peer: Peer) -> Caller:
        """Return the caller whose token ``peer``'s ``Authorization`` header bears.

        :raises AccessDenied: if there is no bearer token or it is not in the policy.
        """
        address = peer.address
        token = _bearer_token(peer.headers.get("Authorization", ""))
        if token is None:
            log.info("request from %s has no bearer token", address)
            raise AccessDenied(_DENIED)
        digest = hashlib.sha256(token).digest()
        found = None
        # Compare with every entry, in constant time, and never stop early: how long a
        # lookup takes says nothing about which hash, or which bytes of it, matched.
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry
        if found is None:
            log.warning("request from %s presented an unknown bearer token", address)
            raise AccessDenied(_DENIED)
        return Caller(replace(found.principal, ip=address), found.rules)

    def reload(self) -> None:
        """Re-read the policy file.

        :raises ConfigError: if the new file is invalid; the old policy stays in force.
        """
        with self._reload_lock:
            entries = load_policy(self.path)
            self._entries = entries
        log.info("policy file %s reloaded: %d tokens", self.path, len(entries))


def load_policy(path: str) -> tuple[_Entry, ...]:
    """Read and check the policy file at ``path``.

    :raises ConfigError: naming the file, the entry and what is wrong.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read policy file {path!r}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {path!r} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"policy file {path!r} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(f"policy file {path!r} is nested too deeply to be a policy") from None
    except ValueError as e:  # e.g. a number with more digits than Python will convert
        raise ConfigError(f"policy file {path!r} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f'policy file {path!r} must hold a JSON object {{"tokens": [...]}}')
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"policy file {path!r}: unknown key {unknown[0]!r}; expected only 'tokens'"
        )
    tokens = doc.get("tokens")
    if not isinstance(tokens, list):
        raise ConfigError(f"policy file {path!r}: 'tokens' must be a list of entries")
    entries: list[_Entry] = []
    seen: dict[bytes, int] = {}
    for index, item in enumerate(tokens):
        where = f"policy file {path!r}, tokens[{index}]"
        entry = _parse_entry(item, where)
        if entry.digest in seen:
            raise ConfigError(
                f"{where}: the same sha256 as tokens[{seen[entry.digest]}]; each token may "
                "appear once"
            )
        seen[entry.digest] = index
        entries.append(entry)
    return tuple(entries)


def _parse_entry(item: Any, where: str) -> _Entry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: an entry must be a JSON object")
    unknown = sorted(set(item) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; expected sha256, user or tags, rules, "
            "hostname, comment"
        )
    sha = item.get("sha256")
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        # Never quote the value: it may be a token pasted in place of its hash.
        hint = (
            "; it looks like a token: store hash_token(TOKEN), never the token"
            if isinstance(sha, str) and sha.startswith(TOKEN_PREFIX)
            else ""
        )
        raise ConfigError(
            f"{where}: 'sha256' must be 64 hex digits (the SHA-256 of the token), "
            f"not {_describe(sha)}{hint}"
        )
    user, tags = item.get("user"), item.get("tags")
    if (user is None) == (tags is None):
        raise ConfigError(f"{where}: give exactly one of 'user' and 'tags'")
    if user is not None and (not isinstance(user, str) or not user):
        raise ConfigError(f"{where}: 'user' must be a non-empty string")
    if tags is not None and (
        not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags)
    ):
        raise ConfigError(f"{where}: 'tags' must be a non-empty list of strings, e.g. [\"tag:ci\"]")
    hostname = item.get("hostname", "")
    if not isinstance(hostname, str):
        raise ConfigError(f"{where}: 'hostname' must be a string")
    raw_rules = item.get("rules")
    if not isinstance(raw_rules, list):
        raise ConfigError(
            f"{where}: 'rules' must be a list of rules (it may be empty), e.g. "
            '[{"action": ["get"], "secret": ["app/*"]}]'
        )
    rules = []
    for number, raw in enumerate(raw_rules):
        try:
            rules.append(Rule.from_json(raw))
        except InvalidRequestError as e:
            raise ConfigError(f"{where}, rules[{number}]: {e}") from None
    principal = Principal(hostname=hostname, user=user or "", tags=tuple(tags or ()))
    return _Entry(bytes.fromhex(sha), principal, tuple(rules))


def _bearer_token(header: str) -> bytes | None:
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    # WSGI gives header values as latin-1 decoded text; encoding back to latin-1 yields
    # the bytes the client sent, which for a UTF-8 token are what hash_token hashed.
    try:
        return credentials.encode("latin-1")
    except UnicodeEncodeError:
        # Not from WSGI; a lone surrogate hashes to what no token in the policy has.
        return credentials.encode("utf-8", "surrogatepass")


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return "missing" if value is None else f"a JSON {type(value).__name__}"


@hookimpl
def setec_register_authorizers(register: Any) -> None:
    """Register the ``policy`` authorizer."""
    register(PolicyAuthorizer)


def parse_allow(value: str) -> dict[str, list[str]]:
    """Parse a command-line grant ``ACTIONS:PATTERN`` (``get,info:app/*``) into a rule.

    :raises ConfigError: naming the value if it has no ``:``, no action, an unknown
        action, or no pattern.
    """
    actions_text, sep, pattern = value.partition(":")
    actions = [a.strip() for a in actions_text.split(",") if a.strip()]
    known = [str(a) for a in Action]
    unknown = [a for a in actions if a not in known]
    if not sep or not actions or not pattern or unknown:
        raise ConfigError(
            f"--allow {value!r} is not ACTIONS:PATTERN with ACTIONS from {', '.join(known)} "
            "(e.g. --allow get,info:prod/app/*)"
        )
    return {"action": actions, "secret": [pattern]}


@hookimpl
def setec_register_commands(cli: Any) -> None:
    """Add ``setec-serve new-token``, which makes a bearer token and its policy entry."""
    if not isinstance(cli, click.Group) or cli.name != "setec-serve":
        return

    @cli.command("new-token")
    @click.option("--user", default="", help="The principal's user (give this or --tag).")
    @click.option("--tag", "tags", multiple=True, help="A principal tag, e.g. tag:ci.")
    @click.option("--hostname", default="", help="Hostname for the audit log.")
    @click.option(
        "--allow",
        "allows",
        multiple=True,
        metavar="ACTIONS:PATTERN",
        help="A grant, e.g. get,info:prod/app/* (repeatable).",
    )
    @click.option("--comment", default="", help="Whose token this is.")
    def new_token_command(
        user: str, tags: tuple[str, ...], hostname: str, allows: tuple[str, ...], comment: str
    ) -> None:
        """Make a bearer token for the policy authorizer.

        Prints the token (give it to the client; it is not stored anywhere) and the
        entry to add to the "tokens" list of the policy file, which holds only its hash.
        """
        try:
            rules = [parse_allow(a) for a in allows]
            token = new_token()
            entry = policy_entry(
                token, user=user, tags=tags, hostname=hostname, rules=rules, comment=comment
            )
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        click.echo(f"token: {token}")
        click.echo('policy entry (add it to the "tokens" list, then send the server SIGHUP):')
        click.echo(json.dumps(entry, indent=2))

"""Helpers for key providers whose key is held by a remote KMS (docs/plugins.md,
"Helpers for key-provider plugins").

A KMS is asked only when the server starts and when keys are rotated, so riding out a
short outage there is cheap: :class:`KmsRetry` calls the KMS again, with jittered
backoff, for up to ``SETEC_KMS_RETRY_SECONDS`` (30 s by default), then raises
:class:`~setec_core.errors.UnavailableError`. A refusal (a disabled key, no permission)
is never retried. :func:`key_name_from_uri` is the scheme check of a ``from_uri``.

The built-in ``aws-kms``, ``gcp-kms`` and ``vault-transit`` providers use these helpers;
so can yours.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

from setec_core.errors import ConfigError, KeyProviderError, UnavailableError
from setec_core.uris import redact

log = logging.getLogger("setec.keys")

T = TypeVar("T")

#: Seconds a KMS call keeps retrying an unreachable or busy KMS (default 30).
RETRY_ENV = "SETEC_KMS_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0

#: What a failed attempt means, as :class:`KmsRetry` asks a provider: called with the
#: operation and the exception, it returns a short description of a transient failure
#: (retried), a :class:`~setec_core.errors.KeyProviderError` to raise at once (a
#: refusal), or ``None`` for an exception it does not know (raised unchanged).
Classify = Callable[[str, Exception], "str | KeyProviderError | None"]


def retry_budget() -> float:
    """The retry budget in seconds, from ``SETEC_KMS_RETRY_SECONDS`` (30 if unset).

    :raises ConfigError: if it is set to something other than a number >= 0.
    """
    raw = os.environ.get(RETRY_ENV)
    if raw is None or raw == "":
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{RETRY_ENV}={raw!r} is not a number of seconds (>= 0)")
    return value


class Backoff:
    """Jittered exponential backoff (0.1 s doubling to 5 s) within ``seconds``.

    :param seconds: how long from now retries may go on.
    """

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        self._delay = 0.1

    def pause(self, what: str, last: str) -> bool:
        """Log a warning that ``what`` failed with ``last`` and sleep before the next try.

        :param what: the call that failed, e.g. ``"AWS KMS Encrypt with key arn:..."``.
        :param last: how it failed, e.g. ``"ThrottlingException: Rate exceeded"``.
        :returns: ``True`` after sleeping, ``False`` (without sleeping) once the budget
            is spent.
        """
        left = self._deadline - time.monotonic()
        if left <= 0:
            return False
        log.warning("%s failed (%s); retrying for up to %.0f s more", what, last, left)
        time.sleep(min(left, self._delay * random.uniform(0.5, 1.0)))  # noqa: S311 - jitter
        self._delay = min(self._delay * 2, 5.0)
        return True


class KmsRetry:
    """Calls one KMS key, retrying transient failures within the retry budget.

    Build one per provider and send every KMS operation through :meth:`call`. Configure
    the SDK to make one attempt per call, with a timeout of :attr:`attempt_timeout` or
    less: its own retries and default timeouts would overrun the budget.

    :param service: what messages call the KMS, e.g. ``"AWS KMS"``.
    :param key: what messages call the key, e.g. its ARN; never key material.
    :param reach: what the operator should check when the KMS cannot be reached, ending
        the sentence "Check ...", e.g. ``"the network path to KMS in us-east-1"``.
    :param classify: what a failed attempt means (see :data:`Classify`).
    :param seconds: the retry budget; by default :func:`retry_budget`.
    :raises ConfigError: if ``seconds`` is not given and ``SETEC_KMS_RETRY_SECONDS`` is
        not a number of seconds.
    """

    def __init__(
        self,
        *,
        service: str,
        key: str,
        reach: str,
        classify: Classify,
        seconds: float | None = None,
    ) -> None:
        self.service = service
        self.key = key
        self.reach = reach
        self.seconds = retry_budget() if seconds is None else seconds
        self._classify = classify

    @property
    def attempt_timeout(self) -> float:
        """A timeout for one attempt: the budget, but at least 1 s and at most 20 s."""
        return min(20.0, max(1.0, self.seconds))

    def call(self, operation: str, attempt: Callable[[], T]) -> T:
        """Return ``attempt()``, calling it again after each transient failure until the
        budget is spent.

        :param operation: the KMS operation, for messages and for the classifier
            (e.g. ``"Encrypt"``).
        :param attempt: makes one call to the KMS.
        :raises KeyProviderError: the classifier's refusal, at once.
        :raises UnavailableError: if the KMS still failed transiently when the budget
            ran out; the message names the key, the budget and the last error.
        """
        backoff = Backoff(self.seconds)
        while True:
            try:
                return attempt()
            # Broad on purpose: the provider's classifier sorts SDK errors, and raises
            # unchanged what it does not recognise.
            except Exception as e:
                outcome = self._classify(operation, e)
                if outcome is None:
                    raise
                if isinstance(outcome, KeyProviderError):
                    raise outcome from None
                last = outcome
            if not backoff.pause(f"{self.service} {operation} with key {self.key}", last):
                raise UnavailableError(
                    f"{self.service} key {self.key} could not be reached in "
                    f"{self.seconds:g} s ({operation}); last error: {last}. Check "
                    f"{self.reach}, or raise {RETRY_ENV}"
                )


def key_name_from_uri(uri: str, scheme: str, form: str) -> str:
    """Return what follows ``scheme://`` in ``uri``, for a ``from_uri`` to parse further.

    :param uri: the URI ``from_uri`` was given, e.g. ``"aws-kms://arn:aws:kms:..."``.
    :param scheme: the scheme it must have, without ``://`` (e.g. ``"aws-kms"``); case
        does not matter, as when the plugins select a provider by its scheme.
    :param form: the expected form, shown in the error.
    :raises ConfigError: if ``uri`` has another scheme or no ``://``; the message shows
        the URI with any credentials redacted, and ``form``.
    """
    found, sep, rest = uri.partition("://")
    if found.lower() != scheme.lower() or not sep:
        raise ConfigError(
            f"not a key name for the {scheme} key provider: {redact(uri)!r}; expected {form}"
        )
    return rest

"""The active values of the secrets a command needs, fetched before it uses any.

``setec run`` and ``setec inject`` need several secrets at once. :class:`Prefetched`
asks for all of them with :meth:`Client.get_many <setec_core.client.Client.get_many>`
(100 a request from a server that offers batch gets, one get each from a Go setec
server), then hands them out one name at a time with the error a get of that name
would have raised, so that a command's messages name the secret that failed exactly
as they did when it fetched each secret itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from setec_core.errors import RequestError, SetecError
from setec_core.model import SecretValue

if TYPE_CHECKING:  # the client library (and requests) load when a command needs them
    from setec_core.client import Client


class Prefetched:
    """The active values of ``names``, fetched now.

    :param client: a :class:`~setec_core.client.Client`.
    :param names: the secrets to fetch, each once however often it is named.
    """

    def __init__(self, client: Client, names: Iterable[str]) -> None:
        self._client = client
        self._results: dict[str, SecretValue | SetecError] = {}
        self._failure: SetecError | None = None
        try:
            self._results = client.get_many(dict.fromkeys(names))
        except RequestError:
            # The server refused a batch whole (a name over its limit, a failing audit
            # log): get() asks for each name alone, so that the error is its own.
            pass
        except SetecError as e:
            # The server cannot be reached, or refuses the caller: the first get would
            # have failed the same way.
            self._failure = e

    def get(self, name: str) -> SecretValue:
        """The active value of ``name``, one of the names given.

        :raises SetecError: what a get of ``name`` would have raised (``NotFound``,
            ``AccessDenied``, ``UnavailableError``, ...).
        """
        if self._failure is not None:
            raise self._failure
        result = self._results.get(name)
        if result is None:
            return self._client.get(name)
        if isinstance(result, SetecError):
            raise result
        return result

"""Answers that wait: how the app hands a request it cannot answer yet (a watch with
nothing to report, docs/api.md §9.2) to a server that can hold it without a thread.

The seam is the WSGI environ, as for answers held until their audit entries are durable
(:data:`~setec_core.http.app.DEFER_AUDIT`):

1. A server that can hold requests sets :data:`PARK_ANSWERS` (true) in the environ.
   setec's front (:mod:`setec_core.http.front`) does.
2. The app, for such a request, checks it and, if it must wait, leaves a
   :class:`ParkedAnswer` under :data:`PENDING_ANSWER`, calls ``start_response`` and
   returns an empty body: both are to be ignored.
3. The server frees the app thread and keeps the request (on its event loop). It calls
   :meth:`ParkedAnswer.start` with a ``wake`` callable, then :meth:`ParkedAnswer.ready`;
   after each ``wake()`` it calls :meth:`ParkedAnswer.ready` again (on its own thread:
   ``wake`` runs on a writer's and must only schedule that).
4. Once :meth:`ParkedAnswer.ready` is true, :attr:`ParkedAnswer.deadline` has passed,
   or the server is stopping, it calls :meth:`ParkedAnswer.answer` for the status,
   headers and body, and sends them. If the client goes away first it calls
   :meth:`ParkedAnswer.cancel` instead. Exactly one of the two, once.

Under any other server (no :data:`PARK_ANSWERS`), the app holds the request on the
thread that runs it, with :meth:`ParkedAnswer.wait`, for at most the watch's timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from setec_core.watch import Watch

#: Set (true) in the environ by a server that holds a :class:`ParkedAnswer` without a
#: thread, as described above.
PARK_ANSWERS = "setec.park_answers"
#: Where the app leaves the :class:`ParkedAnswer` of a request that waits.
PENDING_ANSWER = "setec.pending_answer"

#: An answer as the app makes it: status, headers, body.
Response = tuple[int, list[tuple[str, str]], bytes]


class ParkedAnswer:
    """A request waiting for its :class:`~setec_core.watch.Watch` to see a change.

    :param watch: what it waits for.
    :param finish: makes the whole answer from the watch (the app's encoding, headers,
        metrics and access-log line); called once.
    """

    __slots__ = ("_finish", "_watch")

    def __init__(self, watch: Watch, finish: Callable[[Watch], Response]) -> None:
        self._watch = watch
        self._finish = finish

    @property
    def deadline(self) -> float:
        """When to answer anyway (``time.monotonic()``): the watch's timeout."""
        return self._watch.deadline

    def start(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever :meth:`ready` may have become true; ``wake`` runs on
        a writer's thread and must return at once. Call :meth:`ready` after this."""
        self._watch.on_change(wake)

    def ready(self) -> bool:
        """Whether there is something to answer now."""
        return bool(self._watch.changes())

    def answer(self) -> Response:
        """The answer now (on timeout or stop, an empty ``Changed``); frees the watch."""
        try:
            return self._finish(self._watch)
        finally:
            self._watch.close()

    def cancel(self) -> None:
        """The client went away: free the watch, answer nothing."""
        self._watch.close()

    def wait(self) -> Response:
        """Block this thread until :meth:`ready` or the deadline, then :meth:`answer`
        (for a server that cannot hold requests itself)."""
        woken = threading.Event()
        self.start(woken.set)
        while not self._ready_or_failed():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                break
            woken.wait(remaining)
            # Cleared before ready() looks again: a change after this is not lost.
            woken.clear()
        return self.answer()

    def _ready_or_failed(self) -> bool:
        try:
            return self.ready()
        except Exception:  # answer() meets the same failure, and answers it with a 500
            return True

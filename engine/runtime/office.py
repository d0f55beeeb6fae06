"""Taking office: a replica writes only once its leadership term is claimed in the database.

Where it sits: ``engine.app`` builds one ``Office``. The leader elector calls ``take`` when this
replica acquires the Lease and ``leave`` when it loses it; the database gate calls
``database_back`` when the database answers again. ``claimed`` is one of the three things
``App.is_leading`` asks (with the Lease and the gate), and so every write through the fence.

The term comes first (``Store.claim_leadership``): from then on a commit of the replica that led
before is refused by the database itself. A claim that fails (the database went away between the
elector's check and the claim) leaves the replica holding the Lease without writing: the database
gate is told (``claim_failed``), so the Lease is not renewed and another replica that reaches the
database takes over, or, when the database answers again first, the claim is tried again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

# The logger ``dklb run`` always used for these lines (operators grep them).
log = logging.getLogger("dklb.run")


class Office:
    def __init__(
        self,
        *,
        claim: Callable[[], int],
        holds_lease: Callable[[], bool],
        claim_failed: Callable[[Exception], None],
        look_again: Callable[[], None],
    ) -> None:
        """``claim`` claims a new term and returns it; ``look_again`` has every binding
        reconciled anew (it must return at once: it is called on the elector's and the gate's
        threads)."""
        self._claim = claim
        self._holds_lease = holds_lease
        self._claim_failed = claim_failed
        self._look_again = look_again
        self._claimed = threading.Event()
        # The elector's and the gate's threads may both take office at once: one claim.
        self._lock = threading.Lock()

    def claimed(self) -> bool:
        return self._claimed.is_set()

    def assume(self) -> None:
        """In office without a term: leader election is off, the only replica writes unfenced."""
        self._claimed.set()

    def take(self) -> None:
        """The Lease is held: claim the term, then write."""
        with self._lock:
            if self._claimed.is_set():
                return
            try:
                term = self._claim()
            except Exception as exc:  # any failure means: not writing yet
                log.error(
                    "leading, but the leadership term cannot be claimed in the database (%s): "
                    "not writing until it can",
                    " ".join(f"{type(exc).__name__}: {exc}".split())[:300],
                )
                self._claim_failed(exc)
                return
            log.info("leading: this replica writes now (term %d)", term)
            self._claimed.set()
        self._look_again()

    def leave(self) -> None:
        """Stop writing at once (the Lease is lost, or dklb is stopping)."""
        self._claimed.clear()

    def database_back(self) -> None:
        """The database answers again: claim the term if the Lease was kept meanwhile, or, in
        office, look at every binding again (what failed meanwhile was dropped uncommitted)."""
        if not self._holds_lease():
            return
        if self._claimed.is_set():
            self._look_again()
        else:
            self.take()

"""Taking office (engine.runtime.office): a replica writes only once its term is claimed.

Proves: that the Lease alone does not make a writer, the claimed term does; that a claim that
fails tells the database gate and leaves the replica not writing, and that the database coming
back while the Lease is held claims again (the path a replica takes when the database went away
between the elector's check and the claim); that one claim is made when the elector and the gate
take office at once; that losing the Lease stops writing at once, and the database coming back
then claims nothing; and that a replica in office looks at every binding again when the
database comes back.
"""

from __future__ import annotations

import threading

import pytest

from engine.runtime.office import Office


class Replica:
    """The parts an Office talks to, recorded."""

    def __init__(self) -> None:
        self.lease = False
        self.database_up = True
        self.terms = 0
        self.failures: list[Exception] = []
        self.looks = 0
        self.office = Office(
            claim=self.claim,
            holds_lease=lambda: self.lease,
            claim_failed=self.failures.append,
            look_again=self.look_again,
        )

    def claim(self) -> int:
        if not self.database_up:
            raise ConnectionError("the database went away")
        self.terms += 1
        return self.terms

    def look_again(self) -> None:
        self.looks += 1


def test_the_lease_then_the_claim_make_a_writer() -> None:
    r = Replica()
    assert not r.office.claimed()
    r.lease = True
    r.office.take()
    assert r.office.claimed() and r.terms == 1 and r.looks == 1
    r.office.take()  # the elector says it again: nothing new
    assert r.terms == 1 and r.looks == 1


def test_a_failed_claim_closes_the_gate_and_the_database_coming_back_claims_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Replica()
    r.lease, r.database_up = True, False
    r.office.take()
    assert not r.office.claimed(), "holding the Lease without a term writes nothing"
    assert [str(e) for e in r.failures] == ["the database went away"]
    assert (
        "the leadership term cannot be claimed in the database (ConnectionError: the database went away)"
        in (caplog.text)
    )
    assert r.looks == 0
    r.database_up = True
    r.office.database_back()
    assert r.office.claimed() and r.terms == 1 and r.looks == 1


def test_the_elector_and_the_gate_taking_office_at_once_claim_once() -> None:
    r = Replica()
    r.lease = True
    release = threading.Event()
    claims: list[int] = []

    def slow_claim() -> int:
        release.wait(30)
        claims.append(1)
        return len(claims)

    r.office = Office(
        claim=slow_claim, holds_lease=lambda: True, claim_failed=r.failures.append, look_again=r.look_again
    )
    threads = [threading.Thread(target=r.office.take), threading.Thread(target=r.office.database_back)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(30)
    assert claims == [1] and r.office.claimed()


def test_losing_the_lease_stops_writing_and_the_database_coming_back_claims_nothing() -> None:
    r = Replica()
    r.lease = True
    r.office.take()
    r.lease = False
    r.office.leave()
    assert not r.office.claimed()
    r.office.database_back()
    assert not r.office.claimed() and r.terms == 1 and r.looks == 1


def test_in_office_the_database_coming_back_looks_at_every_binding_again() -> None:
    r = Replica()
    r.lease = True
    r.office.take()
    r.office.database_back()
    assert r.terms == 1 and r.looks == 2


def test_without_leader_election_the_only_replica_is_in_office_without_a_term() -> None:
    r = Replica()
    r.lease = True  # no elector: the App says it holds the "lease"
    r.office.assume()
    assert r.office.claimed() and r.terms == 0
    r.office.database_back()
    assert r.looks == 1 and r.terms == 0

"""Run claims and the node registry through their interfaces, once per state implementation, with
several handles on one store as several daemons have."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from reconciler.state import StateStore
from reconciler.state.claims import Claim, ClaimRefusal, SlotKey
from reconciler.state.nodes import behind
from tests.stores import OpenStore
from tests.test_state import T0

LEASE = timedelta(seconds=60)
SLOT = SlotKey(1, T0)


def claim(
    store: StateStore,
    node: str,
    key: SlotKey = SLOT,
    now: datetime = T0,
    server: str = "db.example.com",
    max_parallel: int = 1,
) -> Claim | ClaimRefusal:
    return store.claims.claim(key, server, max_parallel, node, now, now + LEASE)


def test_a_slot_is_claimed_by_one_node_only(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    granted = claim(first, "a")
    assert isinstance(granted, Claim)
    assert granted.node_id == "a"
    assert claim(second, "b") is ClaimRefusal.TAKEN


def test_a_released_slot_is_never_claimed_again(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    store.claims.release(SLOT, "a")
    assert claim(store, "b", now=T0 + 2 * LEASE) is ClaimRefusal.TAKEN


def test_concurrent_claims_of_one_slot_grant_exactly_one(open_store: OpenStore) -> None:
    handles = [open_store() for _ in range(4)]
    results: list[Claim | ClaimRefusal] = []
    barrier = threading.Barrier(len(handles))

    def race(store: StateStore, node: str) -> None:
        barrier.wait()
        results.append(claim(store, node))

    threads = [
        threading.Thread(target=race, args=(store, f"n{i}")) for i, store in enumerate(handles)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(result, Claim) for result in results) == 1


def test_a_task_with_a_live_claim_claims_no_other_slot(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    later = SlotKey(1, T0 + timedelta(minutes=1))
    assert claim(store, "b", key=later, now=T0 + timedelta(seconds=1)) is ClaimRefusal.TASK_BUSY


def test_a_server_at_its_limit_refuses_more_claims_across_nodes(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert isinstance(claim(first, "a", key=SlotKey(1, T0), max_parallel=2), Claim)
    assert isinstance(claim(second, "b", key=SlotKey(2, T0), max_parallel=2), Claim)
    assert claim(second, "b", key=SlotKey(3, T0), max_parallel=2) is ClaimRefusal.SERVER_FULL
    assert isinstance(claim(second, "b", key=SlotKey(3, T0), server="other.example.com"), Claim)


def test_a_renewed_lease_keeps_the_claim_live(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    later = T0 + LEASE / 2
    assert store.claims.renew(SLOT, "a", later, later + LEASE)
    assert store.claims.expired(T0 + LEASE + timedelta(seconds=1)) == []
    assert [live.node_id for live in store.claims.live_claims(T0 + LEASE)] == ["a"]


def test_an_expired_lease_cannot_be_renewed(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    late = T0 + LEASE
    assert not store.claims.renew(SLOT, "a", late, late + LEASE)
    assert [expired.node_id for expired in store.claims.expired(late)] == ["a"]


def test_an_expired_claim_frees_its_server(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    assert isinstance(claim(store, "b", key=SlotKey(2, T0), now=T0 + LEASE), Claim)


def test_an_expired_slot_is_taken_over_exactly_once(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    claim(first, "dead")
    late = T0 + LEASE
    taken = second.claims.take_over(SLOT, "db.example.com", 1, "b", late, late + LEASE)
    assert isinstance(taken, Claim)
    assert (taken.node_id, taken.attempt) == ("b", 1)
    assert first.claims.take_over(SLOT, "db.example.com", 1, "c", late, late + LEASE) is None
    assert second.claims.expired(late) == []


def test_a_take_over_is_never_taken_over_again(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "dead")
    late = T0 + LEASE
    store.claims.take_over(SLOT, "db.example.com", 1, "b", late, late + LEASE)
    later = late + LEASE
    assert [expired.node_id for expired in store.claims.expired(later)] == ["b"]
    assert store.claims.take_over(SLOT, "db.example.com", 1, "c", later, later + LEASE) is None


def test_a_live_claim_is_not_taken_over(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    now = T0 + LEASE / 2
    assert store.claims.take_over(SLOT, "db.example.com", 1, "b", now, now + LEASE) is None


def test_the_run_attached_to_a_claim_is_reported_when_it_expires(open_store: OpenStore) -> None:
    store = open_store()
    claim(store, "a")
    store.claims.attach_run(SLOT, "a", 42)
    assert [expired.run_id for expired in store.claims.expired(T0 + LEASE)] == [42]


def test_nodes_report_their_revision_and_last_seen(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    first.nodes.heartbeat("a", "aa" * 20, T0, T0, T0)
    second.nodes.heartbeat("b", "bb" * 20, T0 + LEASE, T0 + LEASE, T0)
    assert [(n.node_id, n.revision, n.last_seen) for n in first.nodes.nodes()] == [
        ("a", "aa" * 20, T0),
        ("b", "bb" * 20, T0 + LEASE),
    ]


def test_the_newest_revision_counts_only_live_nodes(open_store: OpenStore) -> None:
    store = open_store()
    store.nodes.heartbeat("stale", "bb" * 20, T0 + LEASE, T0, T0)
    store.nodes.heartbeat("live", "aa" * 20, T0, T0 + 2 * LEASE, T0)
    newest = store.nodes.newest_live_revision_time(T0 + 2 * LEASE, LEASE.total_seconds())
    assert newest == T0


def test_a_node_behind_the_newest_live_revision_is_behind() -> None:
    assert behind(T0, T0 + LEASE)
    assert not behind(T0, T0)
    assert not behind(T0, None)
    assert behind(None, T0)

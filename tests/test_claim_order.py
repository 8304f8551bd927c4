"""The order in which each node of a cluster claims the slots due at once: every node walks the
same list from its own share of it, so the nodes claim different slots rather than all contending
for the same one in lockstep."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.slotclaims import SlotClaims, share_first
from tests.clock import FakeClock
from tests.runs import T0
from tests.stores import OpenStore

node_ids = st.sets(st.text(min_size=1, max_size=5), min_size=2, max_size=6)


@given(items=st.lists(st.integers(), max_size=40), nodes=node_ids, data=st.data())
def test_each_node_claims_every_slot_in_the_same_cyclic_order(
    items: list[int], nodes: set[str], data: st.DataObject
) -> None:
    node_id = data.draw(st.sampled_from(sorted(nodes)))

    order = share_first(items, node_id, nodes)

    assert any(order == items[start:] + items[:start] for start in range(len(items) or 1))


@given(count=st.integers(min_value=0, max_value=60), nodes=node_ids)
def test_the_nodes_shares_cover_every_slot_exactly_once(count: int, nodes: set[str]) -> None:
    items = list(range(count))
    starts = sorted(
        share_first(items, node_id, nodes)[0] if items else 0 for node_id in sorted(nodes)
    )
    # Each node's share runs from its start to the next node's start.
    shares = [items[begin:end] for begin, end in zip(starts, [*starts[1:], count], strict=True)]

    assert sorted(item for share in shares for item in share) == items
    assert max(map(len, shares), default=0) <= -(-count // len(nodes))


def test_a_node_alone_claims_in_the_given_order() -> None:
    assert share_first([1, 2, 3, 4], "a", {"a"}) == [1, 2, 3, 4]


def test_a_node_not_seen_yet_claims_in_the_given_order() -> None:
    assert share_first([1, 2, 3, 4], "c", {"a", "b"}) == [1, 2, 3, 4]


def test_the_second_of_two_live_nodes_starts_half_way(open_store: OpenStore) -> None:
    clock = FakeClock(T0)
    store = open_store()
    a, b = (
        SlotClaims(
            store.claims, store.nodes, node_id=name, clock=clock, applied=lambda: (None, None)
        )
        for name in ("a", "b")
    )
    a.keep_alive()
    b.keep_alive()

    assert b.claim_order([1, 2, 3, 4]) == [3, 4, 1, 2]
    assert a.claim_order([1, 2, 3, 4]) == [1, 2, 3, 4]


def test_claims_are_in_the_given_order_before_the_first_heartbeat(open_store: OpenStore) -> None:
    store = open_store()
    store.nodes.heartbeat("a", None, None, T0, T0)
    b = SlotClaims(
        store.claims, store.nodes, node_id="b", clock=FakeClock(T0), applied=lambda: (None, None)
    )

    assert b.claim_order([1, 2, 3, 4]) == [1, 2, 3, 4]

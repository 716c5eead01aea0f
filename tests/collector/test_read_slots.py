"""ReadSlots (receivers/otlp_grpc.py): the optional cap on messages read at once — a total, a
share per connection, first come first served among connections under their share, and a
waiter that gives up (its call timed out) never keeps or loses a slot."""

from __future__ import annotations

import asyncio

from sluice_collector.receivers.otlp_grpc import ReadSlots


def test_a_connection_gets_its_share_and_others_the_rest() -> None:
    async def scenario() -> None:
        slots = ReadSlots(total=3, per_key=2)
        await slots.acquire("a")
        await slots.acquire("a")
        third_a = asyncio.ensure_future(slots.acquire("a"))
        await asyncio.sleep(0)
        assert not third_a.done()  # over a's share though a slot is free
        await asyncio.wait_for(slots.acquire("b"), 1)  # b is not held up behind a
        assert slots.taken == 3
        slots.release("a")
        await asyncio.wait_for(third_a, 1)  # a's waiter gets the freed slot
        assert slots.taken == 3

    asyncio.run(scenario())


def test_waiters_are_served_in_order_and_a_cancelled_one_leaves_no_trace() -> None:
    async def scenario() -> None:
        slots = ReadSlots(total=1, per_key=1)
        await slots.acquire("a")
        gone = asyncio.ensure_future(slots.acquire("b"))
        next_up = asyncio.ensure_future(slots.acquire("c"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        slots.release("a")
        await asyncio.wait_for(next_up, 1)
        assert slots.taken == 1
        slots.release("c")
        assert slots.taken == 0

    asyncio.run(scenario())

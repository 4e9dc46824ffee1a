"""bot.locks.KeyedLocks: one lock per key, others not blocked, nothing kept once released."""

from __future__ import annotations

import asyncio

from bot.locks import KeyedLocks


async def test_one_key_is_serialised_and_other_keys_are_not() -> None:
    locks = KeyedLocks[int]()
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with locks(1):
            order.append("first in")
            first_in.set()
            await release_first.wait()
            order.append("first out")

    async def second_same_key() -> None:
        async with locks(1):
            order.append("second in")

    async def other_key() -> None:
        async with locks(2):
            order.append("other in")

    holder = asyncio.create_task(first())
    await first_in.wait()
    waiter = asyncio.create_task(second_same_key())
    await other_key()  # key 2 is free although key 1 is held
    await asyncio.sleep(0)
    assert locks.locked(1) and not locks.locked(2)
    assert order == ["first in", "other in"]  # the second holder of key 1 is still waiting
    release_first.set()
    await asyncio.gather(holder, waiter)
    assert order == ["first in", "other in", "first out", "second in"]


async def test_released_keys_are_forgotten_even_after_an_error() -> None:
    locks = KeyedLocks[tuple[int, str]]()
    async with locks((1, "summary")):
        assert len(locks) == 1
    assert len(locks) == 0
    try:
        async with locks((2, "quote")):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(locks) == 0 and not locks.locked((2, "quote"))
    async with locks((2, "quote")):  # and the key can be taken again
        assert locks.locked((2, "quote"))


async def test_a_cancelled_waiter_leaves_the_lock_usable() -> None:
    locks = KeyedLocks[int]()
    held = asyncio.Event()
    done = asyncio.Event()

    async def hold() -> None:
        async with locks(5):
            held.set()
            await done.wait()

    async def wait_for_it() -> None:
        async with locks(5):
            raise AssertionError("the cancelled waiter must never get the lock")

    holder = asyncio.create_task(hold())
    await held.wait()
    waiter = asyncio.create_task(wait_for_it())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    done.set()
    await holder
    assert len(locks) == 0
    async with locks(5):
        assert locks.locked(5)

"""The one retry policy (bot/retry.py): what is tried again, how many times, and the waits between."""

from __future__ import annotations

import pytest

from bot.retry import (
    CLOUDINARY,
    RUNPOD_READ_BACK,
    WORKER_DOWNLOAD_CHUNK,
    RetryLater,
    RetryPolicy,
)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_each_clients_back_off() -> None:
    assert [CLOUDINARY.delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert [RUNPOD_READ_BACK.delay(n) for n in range(1, 4)] == [0.5, 1, 2]
    assert [WORKER_DOWNLOAD_CHUNK.delay(n) for n in range(1, 3)] == [0.2, 0.4]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0, base_delay_s=1, max_delay_s=1)


async def test_retries_until_it_works_waiting_the_back_off() -> None:
    sleeps = Sleeps()
    failures = iter([RetryLater("busy"), RetryLater("busy")])

    async def attempt() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "done"

    policy = RetryPolicy(attempts=3, base_delay_s=1.0, max_delay_s=10.0)
    assert await policy.call(attempt, what="test", sleep=sleeps) == "done"
    assert sleeps.delays == [1.0, 2.0]


async def test_gives_up_with_the_last_failure_and_no_wait_after_it() -> None:
    sleeps = Sleeps()
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise RetryLater(f"busy {len(calls)}")

    policy = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=10.0, linear=True)
    with pytest.raises(RetryLater, match="busy 3"):
        await policy.call(attempt, what="test", sleep=sleeps)
    assert len(calls) == 3 and sleeps.delays == [0.5, 1.0]


async def test_other_failures_are_not_tried_again() -> None:
    sleeps = Sleeps()
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise PermissionError("refused")

    with pytest.raises(PermissionError):
        await CLOUDINARY.call(attempt, what="test", sleep=sleeps)
    assert calls == [1] and sleeps.delays == []


async def test_a_wait_the_server_names_shortens_the_back_off_never_lengthens_it() -> None:
    sleeps = Sleeps()
    failures = iter(
        [RetryLater("soon", after_s=0.25), RetryLater("later", after_s=500.0), RetryLater("x", after_s=-3)]
    )

    async def attempt() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "ok"

    policy = RetryPolicy(attempts=4, base_delay_s=2.0, max_delay_s=60.0)
    assert await policy.call(attempt, what="test", sleep=sleeps) == "ok"
    assert sleeps.delays == [0.25, 4.0, 0.0]

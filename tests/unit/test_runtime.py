"""What a job process's runtime gives its main coroutine."""

from __future__ import annotations

import asyncio
import threading

from receiver.runtime import run


def test_a_job_process_runs_its_threaded_steps_on_one_thread() -> None:
    """Four steps sent to a thread at once, the first blocking until all were sent: one
    thread takes them in turn (the default pool would start a thread for each)."""
    release = threading.Event()
    ran_on: list[int] = []

    def step() -> None:
        release.wait(timeout=10)
        ran_on.append(threading.get_ident())

    async def main() -> int:
        before = threading.active_count()
        steps = [asyncio.create_task(asyncio.to_thread(step)) for _ in range(4)]
        await asyncio.sleep(0)  # each task's first step: its call handed to the executor
        started = threading.active_count() - before
        release.set()
        await asyncio.gather(*steps)
        return started

    assert run(main()) == 1
    assert len(ran_on) == 4
    assert len(set(ran_on)) == 1

"""How a long-running process of ours (a web worker, a job worker, a backfill run from the CLI)
sets up the interpreter once its code is loaded."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

# CPython collects its youngest generation every 700 net allocations of container objects, and
# a webhook (its parsed body, the records made from it, their statements' parameters) holds
# more than that at once: under webhook load the defaults (700, 10, 10) spent about a tenth of
# the web process's CPU in collections (2,060 young and 17 full ones in 25 s, bench.webhooks
# with gc.callbacks) that found next to nothing, as reference counting frees a request's
# objects. A young generation of 50,000 makes them about a hundred times rarer; cycles still
# get collected, and what they hold stays bounded by that many objects.
GC_THRESHOLDS = (50_000, 20, 10)
# A job (a backfill above all) holds a whole batch of parsed lines and records at once, so a
# young collection finds most of its objects alive and walks them again at every older
# generation: at 50,000 a bulk backfill still spent 2.4 s of its 35 s of CPU collecting, at
# 200,000 0.2 s. A web process keeps 50,000: a young collection walks what is alive, and a
# pause of four times that length would land in some request's latency.
JOB_GC_THRESHOLDS = (200_000, 20, 10)


def tune_garbage_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze what importing and starting up made (modules, the schema, compiled statements:
    it lives as long as the process) so no full collection walks it again, and collect the
    young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a job process's main coroutine (a job worker, a backfill from the CLI): the
    collector tuned for jobs, on uvloop as uvicorn runs the web workers. asyncio's own loop spent
    about a tenth of a bulk backfill's CPU in its Python socket transports."""
    tune_garbage_collector(JOB_GC_THRESHOLDS)
    return uvloop.run(_with_one_worker_thread(main))


async def _with_one_worker_thread(main: Coroutine[Any, Any, T]) -> T:
    """`main` with `asyncio.to_thread` on a single thread. A job sends its CPU-bound steps
    there to keep the event loop free for its statements, not to run them in parallel (the
    GIL allows none), and glibc gives each thread that allocates an arena of its own: with
    the default pool (up to six threads) a bulk backfill's peak memory grew 1.11x from
    20,000 to 200,000 orders, against 1.07x with one arena (`MALLOC_ARENA_MAX=1`)."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-cpu")
    )
    return await main

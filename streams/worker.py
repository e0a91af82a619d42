"""Run one Faust worker from our settings (``omnichat worker``)."""

from __future__ import annotations

import asyncio
import io
import logging
import signal

import faust

from omnichat.settings import Settings
from streams.app import create_app

log = logging.getLogger(__name__)


def dump_tasks() -> None:
    """Log every asyncio task's stack: ``kill -USR1 <worker pid>`` shows where a stall is."""
    out = io.StringIO()
    tasks = asyncio.all_tasks()
    for task in tasks:
        print(f"--- {task.get_name()}", file=out)
        coro = task.get_coro()
        while coro is not None:  # the await chain, outermost first
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                print(
                    f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}",
                    file=out,
                )
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    log.warning("%d asyncio tasks:\n%s", len(tasks), out.getvalue())


def run_worker(settings: Settings) -> int:
    """Block until the worker is stopped (SIGTERM/SIGINT stop it cleanly)."""
    app = create_app(settings)

    @app.task
    async def on_usr1_dump_tasks() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)

    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    # At WARNING and above faust's start-up spinner sets the root logger to DEBUG and adds
    # a handler that spins on every record, for the worker's whole life: aiokafka's
    # per-message debug records then cost several per cent of the worker's CPU.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0

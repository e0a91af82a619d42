"""Run one Faust worker from our settings (``omnichat worker``)."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import time

import faust

from omnichat.settings import Settings
from streams.app import create_app
from streams.progress import Progress

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


class DrainingWorker(faust.Worker):
    """A faust worker that, on SIGTERM or Ctrl-C, first lets the pipeline carry what it holds
    to its end (a wave, streams/progress.py), at most ``drain_timeout_seconds``, consuming as
    usual meanwhile; then stops as faust does. A second signal stops at once."""

    def __init__(self, app: faust.App, *, settings: Settings, **kwargs: object) -> None:
        super().__init__(app, **kwargs)
        self.settings = settings
        self._draining: asyncio.Task | None = None

    def _on_sigint(self) -> None:
        self._drain_then_stop(signal.SIGINT)

    def _on_sigterm(self) -> None:
        self._drain_then_stop(signal.SIGTERM)

    def _drain_then_stop(self, signum: signal.Signals) -> None:
        if self._draining is not None or self.settings.drain_timeout_seconds <= 0:
            if self._draining is not None and not self._draining.done():
                log.warning("second signal: stopping without waiting for the drain")
                self._draining.cancel()
            self._schedule_shutdown(signum)
            return
        self._draining = asyncio.ensure_future(self._drain(signum), loop=self.loop)

    async def _drain(self, signum: signal.Signals) -> None:
        s = self.settings
        assert s.broker_url
        progress = Progress(s.broker_url, s.worker_id)
        started = time.monotonic()
        log.info("stopping: draining the pipeline first (up to %gs)", s.drain_timeout_seconds)
        try:
            async with asyncio.timeout(s.drain_timeout_seconds):
                handled = await progress.wave()
            log.info("drained %d records in %.1f s", handled, time.monotonic() - started)
        except TimeoutError:
            left = await _lag(progress)
            log.warning("drain timed out with %s records left", left)
        except Exception as exc:  # broker away: nothing to wait for
            log.warning("drain: the broker did not answer: %r", exc)
        finally:
            await progress.stop()
            self._schedule_shutdown(signum)


async def _lag(progress: Progress) -> str:
    try:
        async with asyncio.timeout(5.0):
            return str(await progress.lag())
    except Exception:
        return "an unknown number of"


def run_worker(settings: Settings) -> int:
    """Block until the worker is stopped (SIGTERM/SIGINT stop it cleanly)."""
    app = create_app(settings)

    @app.task
    async def on_usr1_dump_tasks() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)

    worker = DrainingWorker(app, settings=settings, loglevel=settings.log_level.lower(), quiet=True)
    # At WARNING and above faust's start-up spinner sets the root logger to DEBUG and adds
    # a handler that spins on every record, for the worker's whole life: aiokafka's
    # per-message debug records then cost several per cent of the worker's CPU.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0

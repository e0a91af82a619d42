"""Run one Faust worker from our settings (``omnichat worker``)."""

from __future__ import annotations

import faust

from omnichat.settings import Settings
from streams.app import create_app


def run_worker(settings: Settings) -> int:
    """Block until the worker is stopped (SIGTERM/SIGINT stop it cleanly)."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    # At WARNING and above faust's start-up spinner sets the root logger to DEBUG and adds
    # a handler that spins on every record, for the worker's whole life: aiokafka's
    # per-message debug records then cost several per cent of the worker's CPU.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0

"""Run one Faust worker from our settings (``omnichat worker``)."""

from __future__ import annotations

import faust

from omnichat.settings import Settings
from streams.app import create_app


def run_worker(settings: Settings) -> int:
    """Block until the worker is stopped (SIGTERM/SIGINT stop it cleanly)."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
    return 0

"""``omnichat gateway``: serve until SIGTERM or Ctrl-C, then drain before closing.

aiohttp's ``run_app`` stops listening first and then shuts down; a draining gateway must keep
listening, to answer producing calls 503 + Retry-After and everything else as usual, while the
pipeline carries what was accepted (gateway/intake.py). A second signal cuts the drain short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from gateway.app import create_app
from gateway.intake import drain
from gateway.services import SERVICES
from omnichat.settings import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run the gateway on its host and port until stopped, then drain and close."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()  # opens the resources; the journal replays first (gateway/journal.py)
    try:
        site = web.TCPSite(
            runner, settings.gateway_host, settings.gateway_port, reuse_port=reuse_port
        )
        await site.start()
        log.info("gateway listening on %s:%s", settings.gateway_host, settings.gateway_port)
        loop = asyncio.get_running_loop()
        signals: list[int] = []
        stop = asyncio.Event()
        draining: asyncio.Task | None = None

        def on_signal(signum: int) -> None:
            signals.append(signum)
            stop.set()
            if len(signals) > 1 and draining is not None:
                log.warning("second signal: stopping without waiting for the drain")
                draining.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await stop.wait()
        draining = asyncio.create_task(
            drain(app[SERVICES], settings.drain_timeout_seconds), name="drain"
        )
        with contextlib.suppress(asyncio.CancelledError):
            await draining
    finally:
        await runner.cleanup()

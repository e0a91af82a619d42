"""The benchmark's yardstick: an aiohttp handler that only parses the JSON body.

It runs on the same stack as the gateway (aiohttp + uvloop, no access log) and
answers the same path, so ``ops/bench/ingest.py`` can quote the gateway's
requests/s as a fraction of what this machine serves with no work at all.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    """Parse the body (the least any JSON webhook must do) and answer a small JSON."""
    body = await request.json()
    return web.json_response({"ok": True, "idempotent": False, "items": len(body)})


def make_app() -> web.Application:
    """One POST route, on the gateway's own path shape."""
    app = web.Application()
    app.router.add_post("/api/v1/webhooks/whatsapp/{channel_id}", webhook)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (the benchmark starts one process per ``--processes``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true", help="share the port across processes")
    args = parser.parse_args(argv)
    uvloop.install()
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        reuse_port=args.reuse_port,
        print=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()

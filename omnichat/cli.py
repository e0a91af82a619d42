"""The ``omnichat`` command: dev, gateway, worker, migrate, chat, kb, tap, deadletters."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from omnichat.settings import Settings


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the SQL migrations to OMNICHAT_DATABASE_URL."""
    from storage.migrate import migrate

    if not settings.database_url:
        print("OMNICHAT_DATABASE_URL is not set", file=sys.stderr)
        return 2
    applied = asyncio.run(migrate(settings.database_url))
    print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    """Run the HTTP gateway (production: one per core, sharing the port)."""
    import uvloop
    from aiohttp import web

    from gateway.app import create_app

    uvloop.install()
    web.run_app(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        access_log=None,
        reuse_port=args.reuse_port,
        print=None,
        handle_signals=True,
        shutdown_timeout=10,
    )
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run one Faust stream worker."""
    from streams.worker import run_worker

    return run_worker(settings)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Run everything with embedded defaults."""
    from omnichat.devstack import run_dev

    return run_dev(settings)


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    """Talk to an agent through the whole pipeline from a terminal (sandbox channel)."""
    from omnichat.chat import run_chat

    return asyncio.run(run_chat(settings, args))


def cmd_kb(settings: Settings, args: argparse.Namespace) -> int:
    """Fill a knowledge base from files, or search it, through the REST API."""
    from omnichat.kb import run

    return run(settings, args)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="omnichat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run the whole system on embedded defaults").set_defaults(
        func=cmd_dev
    )
    g = sub.add_parser("gateway", help="run the HTTP gateway")
    g.add_argument("--reuse-port", action="store_true", help="share the port across processes")
    g.set_defaults(func=cmd_gateway)
    sub.add_parser("worker", help="run a stream worker").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    c = sub.add_parser("chat", help="chat with an agent through the pipeline (sandbox)")
    c.add_argument("--url", default=None, help="gateway base URL (default from settings)")
    c.add_argument("--workspace", required=True, help="workspace id")
    c.add_argument("--key", required=True, help="API key")
    c.add_argument("--channel", required=True, help="sandbox channel id")
    c.add_argument("--contact", default="terminal", help="contact id to chat as")
    c.set_defaults(func=cmd_chat)
    kb = sub.add_parser("kb", help="ingest files into a knowledge base, or search it")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True)
    ki = kb_sub.add_parser("ingest", help="upload files (directories walked), wait until indexed")
    ki.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    ki.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (600)")
    ks = kb_sub.add_parser("search", help="print the top results of a question")
    ks.add_argument("question")
    ks.add_argument("-k", type=int, default=5, help="results (5)")
    for p in (ki, ks):
        p.add_argument("--kb", required=True, help="knowledge base id")
        p.add_argument("--url", default=None, help="gateway base URL (env OMNICHAT_URL)")
        p.add_argument("--workspace", default=None, help="workspace id (OMNICHAT_WORKSPACE_ID)")
        p.add_argument("--key", default=None, help="API key (env OMNICHAT_API_KEY)")
        p.set_defaults(func=cmd_kb)
    from omnichat import tap  # `omnichat tap`: its options and runner live with its client

    tap.add_parser(sub)
    from omnichat import deadletters  # `omnichat deadletters`: operators, database access

    deadletters.add_parser(sub)
    from omnichat import rotate  # `omnichat rotate-secrets`: options and runner live there

    rotate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    _logging(settings)
    return int(args.func(settings, args) or 0)


if __name__ == "__main__":
    sys.exit(main())

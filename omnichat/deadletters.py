"""``omnichat deadletters``: the operator's view of dead letters across workspaces.

Platform-wide and straight to the database and the broker (``OMNICHAT_DATABASE_URL``,
``OMNICHAT_BROKER_URL``), like ``omnichat migrate``: no API key. ``list`` prints one
line per dead letter, newest first; ``replay`` produces dead letters' records again to
their stages (``agents_pipeline.deadletters.replay``, the same as the REST API's) and
exits non-zero when any could not be replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any
from uuid import UUID

from omnichat.settings import Settings

REASON_CHARS = 80


def add_parser(sub: Any) -> None:
    """``omnichat deadletters list|replay``."""
    dl = sub.add_parser("deadletters", help="list dead letters, or replay them (operators)")
    dl_sub = dl.add_subparsers(dest="deadletters_command", required=True)
    ls = dl_sub.add_parser("list", help="dead letters, newest first, every workspace's")
    ls.add_argument("--workspace", type=UUID, default=None, help="only this workspace's")
    ls.add_argument("--stage", default=None, help="only this stage's (resolve, send, ...)")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    rp = dl_sub.add_parser(
        "replay", help="produce dead letters' records again to the stage that failed them"
    )
    rp.add_argument("ids", nargs="*", type=UUID, metavar="ID", help="dead letter ids")
    rp.add_argument(
        "--all",
        action="store_true",
        help="every dead letter of --workspace not replayed since it failed",
    )
    rp.add_argument("--workspace", type=UUID, default=None, help="with --all")
    rp.add_argument("--stage", default=None, help="with --all: only this stage's")
    dl.set_defaults(func=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``omnichat deadletters``."""
    if not settings.database_url:
        print("OMNICHAT_DATABASE_URL is not set", file=sys.stderr)
        return 2
    if args.deadletters_command == "list":
        return asyncio.run(list_command(settings, args, sys.stdout))
    if args.all == bool(args.ids):
        print("give dead letter ids, or --all --workspace W", file=sys.stderr)
        return 2
    if args.all and args.workspace is None:
        print("--all needs --workspace", file=sys.stderr)
        return 2
    if not settings.broker_url:
        print("OMNICHAT_BROKER_URL is not set", file=sys.stderr)
        return 2
    return asyncio.run(replay_command(settings, args, sys.stdout))


def _line(row: dict[str, Any]) -> str:
    reason = " ".join(str(row["reason"]).split())
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 3] + "..."
    return "\t".join(
        [
            str(row["id"]),
            row["failed_at"].isoformat(timespec="seconds"),
            str(row["workspace_id"] or "-"),
            row["stage"],
            row["error_code"] or "-",
            f"failures={row['failures']}",
            f"replays={row['replay_count']}",
            reason,
        ]
    )


async def list_command(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    """Print dead letters, newest first."""
    from storage import deadletters as store
    from storage.db import open_pool

    assert settings.database_url
    pool = await open_pool(settings.database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            rows, _ = await store.list_deadletters(
                conn,
                workspace_id=args.workspace,
                limit=max(1, args.limit),
                cursor=None,
                stage=args.stage,
                all_workspaces=True,
            )
    finally:
        await pool.close()
    for row in rows:
        print(_line(row), file=out)
    if not rows:
        print("no dead letters", file=sys.stderr)
    return 0


async def replay_command(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    """Replay the dead letters named (or all of a workspace's); 1 if any could not be."""
    from agents_pipeline.deadletters import NotReplayable, ReplayRecord, replay
    from gateway.producer import BrokerUnavailable, DurableProducer
    from storage import deadletters as store
    from storage.db import open_pool

    assert settings.database_url and settings.broker_url
    pool = await open_pool(settings.database_url, max_size=2)
    producer = DurableProducer(
        settings.broker_url,
        timeout=settings.produce_timeout_seconds,
        partitions=settings.topic_partitions,
    )
    failed = 0
    try:
        await producer.start()
        if args.all:
            async with pool.connection() as conn:
                rows = await store.awaiting_replay(
                    conn, workspace_id=args.workspace, stage=args.stage
                )
            ids = [r["id"] for r in rows]
        else:
            ids = list(args.ids)

        async def produce(record: ReplayRecord) -> None:
            await producer.send(
                record.topic,
                key=record.key,
                value=record.value,
                headers=[],
                partition=record.partition,
            )

        for deadletter_id in ids:
            try:
                done = await replay(
                    pool,
                    deadletter_id=deadletter_id,
                    workspace_id=None,
                    produce=produce,
                    partitions=settings.topic_partitions,
                )
            except NotReplayable as exc:
                print(f"{deadletter_id}\tnot replayable: {exc}", file=out)
                failed += 1
                continue
            except BrokerUnavailable as exc:
                print(f"{deadletter_id}\tbroker unavailable: {exc}", file=out)
                failed += 1
                continue
            if done is None:
                print(f"{deadletter_id}\tnot found", file=out)
                failed += 1
                continue
            row, record = done
            print(
                f"{deadletter_id}\treplayed to {record.topic}\treplays={row['replay_count']}",
                file=out,
            )
        if args.all:
            print(f"{len(ids) - failed} of {len(ids)} replayed", file=sys.stderr)
    finally:
        await producer.stop()
        await pool.close()
    return 1 if failed else 0

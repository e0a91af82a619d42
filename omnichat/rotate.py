"""``omnichat rotate-secrets``: re-encrypt every stored secret with the first Fernet key.

Run it after putting a new key first in ``OMNICHAT_SECRET_KEYS`` (and giving every process
the new list); when it reports nothing left on an older key, that key can be removed
(docs/DEPLOY.md). What ``SecretBox`` seals is the channels' credentials, nothing else.

Batches of ``--batch-size`` channels in id order, each written in one transaction.
Idempotent: a secret the first key already opens is left alone, so a second run re-encrypts
nothing. A channel changed meanwhile (a PATCH between the read and the write) is not
overwritten; the command passes again over what is left, and reports what still is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from omnichat.settings import Settings
from storage import channels
from storage.secrets import SecretBox

PASSES = 3  # passes over the table while rows change under the command


@dataclass
class RotationReport:
    """What one run did."""

    rotated: int = 0
    current: int = 0
    changed: int = 0  # changed by someone else between read and write, in the last pass
    unreadable: list[UUID] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every stored secret is now sealed with the first key."""
        return not self.changed and not self.unreadable

    def line(self) -> str:
        """The one-line summary the command prints."""
        return (
            f"channels: {self.rotated} re-encrypted, {self.current} already on the first key, "
            f"{self.changed} changed meanwhile, {len(self.unreadable)} unreadable"
        )


async def _one_pass(pool: AsyncConnectionPool, box: SecretBox, batch: int) -> RotationReport:
    report = RotationReport()
    after: UUID | None = None
    while True:
        async with pool.connection() as conn:
            rows = await channels.sealed_secrets_page(conn, after=after, limit=batch)
        if not rows:
            return report
        after = rows[-1][0]
        swaps: list[tuple[UUID, bytes, bytes]] = []
        for channel_id, token in rows:
            if box.is_current(token):
                report.current += 1
                continue
            try:
                swaps.append((channel_id, token, box.rotate(token)))
            except ValueError:
                report.unreadable.append(channel_id)
        if not swaps:
            continue
        async with pool.connection() as conn, conn.transaction():
            for channel_id, old, new in swaps:
                if await channels.replace_sealed_secrets(
                    conn, channel_id=channel_id, old=old, new=new
                ):
                    report.rotated += 1
                else:
                    report.changed += 1


async def rotate_secrets(
    pool: AsyncConnectionPool, box: SecretBox, *, batch_size: int = 500
) -> RotationReport:
    """Re-encrypt every channel's secrets with the box's first key; counts of what it did.

    ``current`` counts what the first pass found already on the first key; later passes
    (only while rows changed under it) add what they re-encrypt.
    """
    total = await _one_pass(pool, box, batch_size)
    for _ in range(PASSES - 1):
        if not total.changed:
            break
        again = await _one_pass(pool, box, batch_size)
        total.rotated += again.rotated
        total.changed, total.unreadable = again.changed, again.unreadable
    return total


async def _run(settings: Settings, batch_size: int) -> int:
    from storage.db import open_pool

    assert settings.database_url
    box = SecretBox(settings.fernet_keys)
    pool = await open_pool(settings.database_url, min_size=1, max_size=2)
    try:
        report = await rotate_secrets(pool, box, batch_size=batch_size)
    finally:
        await pool.close()
    print(report.line())
    for channel_id in report.unreadable:
        print(f"unreadable with every configured key: channel {channel_id}", file=sys.stderr)
    if report.changed:
        print("some channels changed during the run: run it again", file=sys.stderr)
    return 0 if report.complete else 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``omnichat rotate-secrets``."""
    if not settings.database_url:
        print("OMNICHAT_DATABASE_URL is not set", file=sys.stderr)
        return 2
    if not settings.fernet_keys:
        print("set OMNICHAT_SECRET_KEYS (new key first) or OMNICHAT_SECRET_KEY", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("--batch-size must be at least 1", file=sys.stderr)
        return 2
    return asyncio.run(_run(settings, args.batch_size))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``omnichat rotate-secrets``."""
    p = sub.add_parser(
        "rotate-secrets", help="re-encrypt every stored secret with the first secret key"
    )
    p.add_argument("--batch-size", type=int, default=500, help="channels per transaction (500)")
    p.set_defaults(func=run)

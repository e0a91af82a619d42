"""A workspace's running statistics, folded from ``usage.events`` into one table value.

The worker keeps one JSON document per workspace in the ``workspace-stats`` table
(on the workspace's partition) and the admin views read it; these functions are
the fold and the views, with no Faust in them.
"""

from __future__ import annotations

import copy
from typing import Any

from streams.contracts import UsageEvent

Stats = dict[str, Any]


def empty() -> Stats:
    """The statistics of a workspace nothing happened in yet."""
    return {
        "channels": {},
        "conversations": {"opened": 0, "closed": 0},
        "runs": {
            "count": 0,
            "by_outcome": {},
            "latency_ms_sum": 0,
            "cost_usd": 0.0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        },
    }


def apply(stats: Stats | None, ev: UsageEvent) -> Stats:
    """``stats`` with one event folded in (a new document: table values are not mutated)."""
    out = copy.deepcopy(stats) if stats else empty()
    kind = ev.kind
    if kind in ("inbound_messages", "outbound_messages") and ev.channel_id is not None:
        channel = out["channels"].setdefault(str(ev.channel_id), {"inbound": 0, "outbound": 0})
        channel["inbound" if kind == "inbound_messages" else "outbound"] += ev.amount
    elif kind == "conversations_opened":
        out["conversations"]["opened"] += ev.amount
    elif kind == "conversations_closed":
        out["conversations"]["closed"] += ev.amount
    elif kind == "agent_runs":
        runs = out["runs"]
        runs["count"] += ev.amount
        outcome = ev.outcome or "unknown"
        runs["by_outcome"][outcome] = runs["by_outcome"].get(outcome, 0) + ev.amount
        runs["latency_ms_sum"] += ev.latency_ms or 0
        runs["cost_usd"] += ev.cost_usd or 0.0
    elif kind == "llm_prompt_tokens":
        out["runs"]["prompt_tokens"] += ev.amount
    elif kind == "llm_completion_tokens":
        out["runs"]["completion_tokens"] += ev.amount
    return out


def open_conversations(stats: Stats | None) -> dict[str, int]:
    """Conversations opened and closed so far, and how many are open now."""
    conv = (stats or empty())["conversations"]
    return {
        "open": max(0, conv["opened"] - conv["closed"]),
        "opened": conv["opened"],
        "closed": conv["closed"],
    }


def channel_messages(stats: Stats | None) -> list[dict[str, Any]]:
    """Messages in and out per channel, busiest first."""
    channels = (stats or empty())["channels"]
    items = [
        {"channel_id": cid, "inbound": c["inbound"], "outbound": c["outbound"]}
        for cid, c in channels.items()
    ]
    return sorted(items, key=lambda i: (-(i["inbound"] + i["outbound"]), i["channel_id"]))


def agent_runs(stats: Stats | None) -> dict[str, Any]:
    """Runs by outcome, tokens, mean latency and estimated cost."""
    runs = (stats or empty())["runs"]
    count = runs["count"]
    return {
        "count": count,
        "by_outcome": dict(sorted(runs["by_outcome"].items())),
        "prompt_tokens": runs["prompt_tokens"],
        "completion_tokens": runs["completion_tokens"],
        "mean_latency_ms": round(runs["latency_ms_sum"] / count, 1) if count else None,
        "cost_usd": round(runs["cost_usd"], 6),
    }

"""A workspace's running statistics, folded from ``usage.events`` into one table value.

The worker keeps one JSON document per workspace in the ``workspace-stats`` table
(on the workspace's partition) and the admin views read it; these functions are
the fold, the views and the merge of two copies, with no Faust in them.

Every figure in a document only grows as events are folded in (``folded`` counts
them), so two copies of one workspace's history — the table's, rebuilt from its
changelog, and the one kept in PostgreSQL — merge by taking the larger of each.
"""

from __future__ import annotations

import copy
from typing import Any

from streams.contracts import UsageEvent

Stats = dict[str, Any]


def empty() -> Stats:
    """The statistics of a workspace nothing happened in yet."""
    return {
        "folded": 0,
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
    out["folded"] = out.get("folded", 0) + 1
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


def folded(stats: Stats | None) -> int:
    """How many events a document holds (documents written before it was counted: 0)."""
    return int((stats or {}).get("folded", 0))


def merge(a: Stats | None, b: Stats | None) -> Stats | None:
    """The larger of each figure of two copies of one workspace's document.

    Both copies are folds of one history, each up to some point: every figure of the
    longer one is at least the other's, so this is the longer copy, whichever it is,
    and one copy missing a channel or an outcome the other has loses nothing.
    """
    if a is None or b is None:
        return copy.deepcopy(a if b is None else b)
    return _max(a, b)


def _max(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = copy.deepcopy(a)
        for k, v in b.items():
            out[k] = _max(out[k], v) if k in out else copy.deepcopy(v)
        return out
    if isinstance(a, int | float) and isinstance(b, int | float):
        return max(a, b)
    return copy.deepcopy(a)


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

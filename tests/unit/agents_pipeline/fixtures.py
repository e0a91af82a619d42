"""Shared helpers of the provider tests: the real payloads, headers, and a small fuzzer."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers.base import NormalizedEvent, Provider, WebhookItem
from streams.contracts import ProviderName, RawHeaders

# /work/shared/fixtures/providers, next to the repository at /work/main.
FIXTURES_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "providers"

WORKSPACE_ID = UUID("11111111-1111-4111-8111-111111111111")
CHANNEL_ID = UUID("22222222-2222-4222-8222-222222222222")
RECEIVED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TRACE_ID = "trace-0001"

# Values of every JSON type, to put where a payload holds something else.
GARBAGE: tuple[Any, ...] = (None, "", "x", 0, -1, 1.5, True, [], {}, ["x"], {"x": 1}, [{}])

PathKey = str | int


def load_fixture(name: str) -> Any:
    """A provider payload from the shared fixtures, parsed."""
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


def fixture_names(prefix: str) -> list[str]:
    """Names of the fixture files that start with ``prefix``, sorted."""
    return sorted(p.name for p in FIXTURES_DIR.glob(f"{prefix}*.json"))


def make_headers(provider: ProviderName) -> RawHeaders:
    """Headers the gateway would have put on the raw webhook record."""
    return RawHeaders(
        provider=provider,
        channel_id=CHANNEL_ID,
        workspace_id=WORKSPACE_ID,
        received_at=RECEIVED_AT,
        trace_id=TRACE_ID,
        idempotency_key="delivery-key",
    )


def run(provider: Provider, body: Any, **split_kwargs: Any) -> list[NormalizedEvent]:
    """split + normalize of a whole body, as the normalize stage does it."""
    headers = make_headers(provider.name)
    events: list[NormalizedEvent] = []
    for item in provider.split(body, **split_kwargs):
        events.extend(provider.normalize(item, headers=headers))
    return events


def _paths(node: Any, path: tuple[PathKey, ...] = ()) -> Iterator[tuple[PathKey, ...]]:
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*path, index))


def mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """(description, copy) of ``doc`` with one node swapped for garbage, or one key removed."""
    for path in _paths(doc):
        for garbage in GARBAGE:
            if not path:
                yield f"root={garbage!r}", copy.deepcopy(garbage)
                continue
            mutated = copy.deepcopy(doc)
            parent = mutated
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = copy.deepcopy(garbage)
            yield f"{path}={garbage!r}", mutated
        if path:
            mutated = copy.deepcopy(doc)
            parent = mutated
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict):
                del parent[path[-1]]
                yield f"del {path}", mutated


def assert_only_unsupported(provider: Provider, body: Any) -> None:
    """Fuzz split and normalize: any outcome but UnsupportedPayload fails the test."""
    headers = make_headers(provider.name)
    for what, mutated in mutations(body):
        try:
            items = provider.split(mutated)
        except UnsupportedPayload:
            continue
        except Exception as exc:
            pytest.fail(f"split, {what}: {exc!r}")
        for item in items:
            _normalize_or_unsupported(provider, item, headers, f"split, {what}")
    for item in provider.split(body):
        for what, payload in mutations(item.payload):
            forged = WebhookItem(key=item.key, kind=item.kind, payload=payload)
            _normalize_or_unsupported(provider, forged, headers, f"payload, {what}")


def _normalize_or_unsupported(
    provider: Provider, item: WebhookItem, headers: RawHeaders, what: str
) -> None:
    try:
        provider.normalize(item, headers=headers)
    except UnsupportedPayload:
        pass
    except Exception as exc:
        pytest.fail(f"normalize, {what}: {exc!r}")

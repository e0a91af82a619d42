"""Credentials out of webhook bodies before they reach a topic.

Some providers put a credential in the webhook body itself: Evolution sends the
instance's API key as ``apikey`` on every event. ``webhooks.raw`` is read by the normalize
stage and by analysts' taps, and nothing on a topic may let its reader act as the
workspace, so the gateway produces the body without such fields. Each provider names its
own (``Provider.redact``); the gateway calls ``redact_webhook`` once per webhook, after the
signature or token check (Meta signs the bytes as received) and before the body is split
into items, so the idempotency keys the gateway and the stream compute agree.
"""

from __future__ import annotations

import json
from typing import Any

from agents_pipeline.providers import get_provider
from streams.contracts import ProviderName


def _dumps(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: keep it escaped
        return json.dumps(body, separators=(",", ":")).encode()


def redact_webhook(
    provider: ProviderName | str, raw: bytes, body: Any, *, envelope: str = "provider"
) -> bytes:
    """Remove the provider's credentials from the parsed ``body``, in place, and return the
    bytes to produce: ``raw`` itself when nothing was removed (a signed body goes on exactly
    as received), else ``body`` serialised again.

    ``envelope="inbox"``: ``body`` is the generic inbox's ``{channel_id, payload, ...}``, and
    the provider's payload is ``body["payload"]``.
    """
    payload = body.get("payload") if envelope == "inbox" and isinstance(body, dict) else body
    if not isinstance(payload, dict) or not get_provider(provider).redact(payload):
        return raw
    return _dumps(body)

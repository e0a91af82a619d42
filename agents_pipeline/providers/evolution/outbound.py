"""Evolution API (v2) outbound call: send a text through an instance.

``POST {base_url}/message/sendText/{instance}`` with the ``apikey`` header and
the v2 body ``{"number", "text"}``. Evolution errors carry no stable code, so
the HTTP status decides whether a retry can help.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import aiohttp
from pydantic import SecretStr

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.base import SendResult
from agents_pipeline.providers.configs import EvolutionConfig
from agents_pipeline.providers.http import (
    HttpAnswer,
    excerpt,
    is_transient_status,
    join_url,
    post_json,
    provider_error,
)

PROVIDER = "Evolution API"


async def send_text(
    session: aiohttp.ClientSession,
    config: EvolutionConfig,
    *,
    to: str,
    text: str,
    timeout: float = 10.0,
) -> SendResult:
    """Send one text in a single attempt; ``to`` (phone or jid) goes as given."""
    answer = await post_json(
        session,
        join_url(config.base_url, "message", "sendText", config.instance),
        {"number": to, "text": text},
        provider=PROVIDER,
        headers={"apikey": config.api_key.get_secret_value()},
        timeout=timeout,
        secrets=(config.api_key,),
    )
    if not answer.ok:
        raise classify_error(answer, secrets=(config.api_key,))
    try:
        message_id = answer.body["key"]["id"]
    except (KeyError, TypeError):
        message_id = None
    if not isinstance(message_id, str) or not message_id:
        # Not retriable: the message may have gone out, and a retry could send it twice.
        raise ProviderError(
            f"{PROVIDER} answered HTTP {answer.status} without key.id: {excerpt(answer.text)}",
            code="invalid_response",
            http_status=answer.status,
        )
    return SendResult(provider_message_id=message_id, raw=answer.body)


def classify_error(answer: HttpAnswer, *, secrets: Iterable[SecretStr] = ()) -> ProviderError:
    """Map an Evolution error answer to a ProviderError: 408/429/5xx retriable, other 4xx not."""
    body = answer.body if isinstance(answer.body, dict) else {}
    code = body.get("code")
    code = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
    return provider_error(
        PROVIDER,
        answer,
        code=code or None,
        detail=_detail(body) or excerpt(answer.text) or "empty body",
        retriable=is_transient_status(answer.status),
        secrets=secrets,
    )


def _detail(body: dict) -> str:
    """The error name and ``response.message`` (a string or a list in Evolution's answers)."""
    response = body.get("response")
    message = response.get("message") if isinstance(response, dict) else body.get("message")
    if isinstance(message, list) and all(isinstance(item, str) for item in message):
        message = "; ".join(message)
    elif message is not None and not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    parts = [str(part) for part in (body.get("error"), message) if part]
    return ": ".join(parts)

"""WhatsApp Cloud API (Meta Graph) outbound calls: send a text, mark a message read.

Both are ``POST {base_url}/{api_version}/{phone_number_id}/messages`` with a
bearer token. Errors are classified by the body's ``error.code`` first, because
Meta answers very different failures with the same HTTP status; the status
decides only for codes we do not know.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp
from pydantic import SecretStr

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.base import SendResult
from agents_pipeline.providers.configs import WhatsAppCloudConfig
from agents_pipeline.providers.http import (
    HttpAnswer,
    excerpt,
    is_transient_status,
    join_url,
    post_json,
    provider_error,
)

PROVIDER = "WhatsApp Cloud API"

# Throttling and Meta-side transient failures: the same call can succeed later.
RETRIABLE_CODES = frozenset(
    {
        1,  # API unknown (possible server error)
        2,  # API service: temporary downtime or overload
        4,  # application request limit reached
        80007,  # WABA rate limit
        80008,  # spam rate limit
        130429,  # Cloud API throughput reached
        131000,  # something went wrong (unknown error, Meta says try again)
        131016,  # service unavailable
        131048,  # spam rate limit
        131056,  # pair rate limit (too many messages to the same user)
        133004,  # server temporarily unavailable
    }
)
# The retriable codes that are rate limits (the rest are Meta-side failures).
RATE_LIMIT_CODES = frozenset({4, 80007, 80008, 130429, 131048, 131056})
# Re-engagement: more than 24 hours since the user last wrote; free text is refused.
OUTSIDE_WINDOW_CODE = 131047
# Listed for the reader; any code outside RETRIABLE_CODES on a 4xx is permanent too.
PERMANENT_CODES = frozenset(
    {
        10,  # permission denied
        100,  # invalid parameter
        190,  # access token expired or invalid
        200,  # permission not granted
        131008,  # required parameter missing
        131009,  # parameter value invalid
        131026,  # message undeliverable (not a WhatsApp user, old app, ...)
        131051,  # unsupported message type
    }
)


async def send_text(
    session: aiohttp.ClientSession,
    config: WhatsAppCloudConfig,
    *,
    to: str,
    text: str,
    timeout: float = 10.0,
) -> SendResult:
    """Send one free-form text in a single attempt, since the send stage owns retries."""
    payload = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": text},
    }
    answer = await _post_messages(session, config, payload, timeout)
    try:
        message_id = answer.body["messages"][0]["id"]
    except (KeyError, IndexError, TypeError):
        message_id = None
    if not isinstance(message_id, str) or not message_id:
        # Not retriable: the message may have gone out, and a retry could send it twice.
        raise ProviderError(
            f"{PROVIDER} answered HTTP {answer.status} without messages[0].id: "
            f"{excerpt(answer.text)}",
            code="invalid_response",
            http_status=answer.status,
        )
    return SendResult(provider_message_id=message_id, raw=answer.body)


async def mark_read(
    session: aiohttp.ClientSession,
    config: WhatsAppCloudConfig,
    *,
    message_id: str,
    timeout: float = 10.0,
) -> None:
    """Mark an inbound message read (blue ticks), so the user sees we got it."""
    payload = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
    answer = await _post_messages(session, config, payload, timeout)
    if not isinstance(answer.body, dict) or answer.body.get("success") is not True:
        raise ProviderError(
            f"{PROVIDER} did not confirm the read receipt: {excerpt(answer.text)}",
            code="invalid_response",
            http_status=answer.status,
        )


def classify_error(answer: HttpAnswer, *, secrets: Iterable[SecretStr] = ()) -> ProviderError:
    """Map a Graph error answer to a ProviderError by ``error.code`` first, HTTP status second."""
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = _int_code(error.get("code"))
    detail = _detail(error) or excerpt(answer.text) or "empty body"
    str_code = str(code) if code is not None else None
    if code == OUTSIDE_WINDOW_CODE:
        return provider_error(
            PROVIDER,
            answer,
            code=str_code,
            detail=detail,
            retriable=False,
            outside_window=True,
            secrets=secrets,
        )
    if code in RETRIABLE_CODES:
        retriable = True
    elif code in PERMANENT_CODES:
        retriable = False
    else:
        retriable = is_transient_status(answer.status)
    return provider_error(
        PROVIDER, answer, code=str_code, detail=detail, retriable=retriable, secrets=secrets
    )


async def _post_messages(
    session: aiohttp.ClientSession,
    config: WhatsAppCloudConfig,
    payload: dict[str, Any],
    timeout: float,
) -> HttpAnswer:
    """POST to the phone number's messages edge and raise on any non-2xx answer."""
    url = join_url(config.base_url, config.api_version, config.phone_number_id, "messages")
    token = config.access_token.get_secret_value()
    answer = await post_json(
        session,
        url,
        payload,
        provider=PROVIDER,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        secrets=(config.access_token,),
    )
    if not answer.ok:
        raise classify_error(answer, secrets=(config.access_token,))
    return answer


def _int_code(value: object) -> int | None:
    """Graph codes are integers, but accept their string form too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _detail(error: dict[str, Any]) -> str:
    """Meta's message, details and trace id: what a human needs to understand the failure."""
    parts = [str(error["message"])] if error.get("message") else []
    data = error.get("error_data")
    if isinstance(data, dict) and data.get("details"):
        parts.append(str(data["details"]))
    if error.get("fbtrace_id"):
        parts.append(f"fbtrace_id={error['fbtrace_id']}")
    return " | ".join(parts)

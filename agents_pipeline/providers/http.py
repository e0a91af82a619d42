"""HTTP plumbing shared by the provider clients: one POST, its timeout, and error basics.

A provider client makes exactly one attempt per call (the send stage owns
retries), so every way a call can fail ends as a ``ProviderError`` whose
``retriable`` and ``retry_after`` tell the stage what to do next. Secrets given
to ``post_json`` are scrubbed from every message it builds.

Redirects are never followed (a 3xx is the ``redirect_not_followed`` error): a redirect
would take the request, credentials included, to a destination nobody configured. A
connection the outbound address policy refuses (``providers.egress``) is the
``destination_not_allowed`` error. The messages of these errors are for the server's
logs: the send stage shows workspaces only its own codes and texts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import AnyHttpUrl, SecretStr

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.egress import DestinationNotAllowed

REDACTED = "[redacted]"


@dataclass(frozen=True)
class HttpAnswer:
    """A provider's answer read whole, so that callers classify it without touching aiohttp."""

    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON; None when the body is empty or not JSON
    text: str

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def retry_after(self) -> float | None:
        """Seconds the provider asked us to wait, from its Retry-After header."""
        return parse_retry_after(self.headers.get("Retry-After"))


def join_url(base_url: AnyHttpUrl | str, *segments: str) -> str:
    """Append path segments to a base URL, quoting each so that a name cannot alter the path."""
    path = "/".join(quote(segment, safe="") for segment in segments)
    return f"{str(base_url).rstrip('/')}/{path}"


def redact(text: str, secrets: Iterable[SecretStr]) -> str:
    """Replace every secret value in a text, so that no error message can leak a credential."""
    for secret in secrets:
        value = secret.get_secret_value()
        if value:
            text = text.replace(value, REDACTED)
    return text


def parse_retry_after(value: str | None) -> float | None:
    """Read a Retry-After header (delay in seconds or HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def is_transient_status(status: int) -> bool:
    """Whether the HTTP status alone says a later attempt may succeed."""
    return status in (408, 429) or status >= 500


def provider_error(
    provider: str,
    answer: HttpAnswer,
    *,
    code: str | None,
    detail: str,
    retriable: bool,
    outside_window: bool = False,
    secrets: Iterable[SecretStr] = (),
) -> ProviderError:
    """Build the ProviderError for an error answer, with ``http_<status>`` when no code is known."""
    code = code or f"http_{answer.status}"
    message = redact(f"{provider} answered HTTP {answer.status} ({code}): {detail}", secrets)
    return ProviderError(
        message,
        code=code,
        http_status=answer.status,
        retriable=retriable,
        retry_after=answer.retry_after if retriable else None,
        outside_window=outside_window,
    )


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    *,
    provider: str,
    headers: Mapping[str, str],
    timeout: float,
    secrets: Iterable[SecretStr] = (),
) -> HttpAnswer:
    """POST JSON as UTF-8 once and read the whole answer; transport failures are retriable.

    A redirect is not followed: it raises ``redirect_not_followed``, not retriable.
    """
    secrets = tuple(secrets)
    try:
        data = json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: send it escaped instead
        data = json.dumps(payload).encode()
    try:
        async with session.post(
            url,
            data=data,
            headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            status, answer_headers = response.status, response.headers
    except TimeoutError as exc:
        raise ProviderError(
            f"{provider} gave no answer within {timeout:g}s", code="timeout", retriable=True
        ) from exc
    except aiohttp.InvalidURL as exc:
        raise ProviderError(
            redact(f"{provider} URL is invalid: {exc}", secrets), code="invalid_url"
        ) from exc
    except aiohttp.ClientError as exc:
        if _refused_by_policy(exc):
            raise ProviderError(
                f"{provider} URL leads to an address the outbound policy refuses",
                code="destination_not_allowed",
            ) from None  # the cause names the resolved address: for the policy's log only
        reason = str(exc) or type(exc).__name__
        raise ProviderError(
            redact(f"{provider} could not be reached: {reason}", secrets),
            code="connection_error",
            retriable=True,
        ) from exc
    text = raw.decode("utf-8", errors="replace")
    if 300 <= status < 400:
        raise ProviderError(
            f"{provider} answered HTTP {status} (a redirect, not followed)",
            code="redirect_not_followed",
            http_status=status,
        )
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    return HttpAnswer(status=status, headers=answer_headers, body=body, text=text)


def _refused_by_policy(exc: BaseException) -> bool:
    """Whether a client error comes from the outbound address policy (anywhere in its causes)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, DestinationNotAllowed):
            return True
        if isinstance(seen, aiohttp.ClientConnectorError) and isinstance(
            seen.os_error, DestinationNotAllowed
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def excerpt(text: str, limit: int = 200) -> str:
    """A short single-line excerpt of a non-JSON body, for an error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[:limit]}…"

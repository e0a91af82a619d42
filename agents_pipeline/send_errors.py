"""What a workspace learns about a failed send: our own code and text, never the provider's.

A channel's ``base_url`` is the workspace's to set, so whatever answers there is not
trusted: an answer's body, headers or error text could be an internal service's, and it
would reach the workspace through ``messages.sent``, ``deadletter``, the message row and
the API. Those carry only the codes below with their fixed texts, and the provider's
numeric error code (Meta's ``error.code``) when it has one; a code that is not a number
(Evolution's bodies carry free text there) is dropped. The provider's own words go to the
worker's log.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.whatsapp_cloud.outbound import RATE_LIMIT_CODES

MESSAGES: dict[str, str] = {
    "destination_not_allowed": "The channel's base_url leads to an address the platform does "
    "not call (loopback, private, link-local, multicast, reserved or cloud metadata).",
    "redirect_not_followed": "The provider answered with a redirect; redirects are not followed.",
    "invalid_url": "The channel's base_url is not a valid URL.",
    "timeout": "The provider gave no answer in time.",
    "connection_error": "The provider could not be reached.",
    "rate_limited": "The provider kept refusing the message for its rate limits.",
    "provider_unavailable": "The provider kept failing to take the message.",
    "provider_auth_failed": "The provider refused the channel's credentials.",
    "provider_rejected": "The provider refused the message.",
    "invalid_response": "The provider's answer carried no message id; the message may have "
    "gone out, so it is not sent again.",
    "outside_window": "Outside WhatsApp's 24-hour customer-service window.",
    "channel_missing": "The channel no longer exists.",
    "conversation_missing": "The conversation no longer exists.",
    "channel_inactive": "The channel is deactivated.",
    "workspace_inactive": "The workspace is deactivated.",
    "internal_error": "The message could not be sent because of an internal error.",
}
# ProviderError codes that are already ours (set by providers.http or the clients).
OWN_CODES = frozenset(
    {
        "destination_not_allowed",
        "redirect_not_followed",
        "invalid_url",
        "timeout",
        "connection_error",
        "invalid_response",
    }
)


@dataclass(frozen=True)
class PublicError:
    """A send failure as a workspace sees it."""

    code: str
    message: str
    provider_code: str | None = None


def provider_code(exc: ProviderError) -> str | None:
    """The provider's error code when it is a number (Meta's), else None."""
    code = exc.code
    if code and code.isascii() and code.isdigit() and len(code) <= 12:
        return code
    return None


def public_error(exc: ProviderError) -> PublicError:
    """Our code and text for a provider error, with the provider's numeric code if any."""
    number = provider_code(exc)
    if exc.code in OWN_CODES:
        code = exc.code
    elif exc.outside_window:
        code = "outside_window"
    elif exc.http_status in (401, 403) or number == "190":
        code = "provider_auth_failed"
    elif exc.http_status == 429 or (number is not None and int(number) in RATE_LIMIT_CODES):
        code = "rate_limited"
    elif exc.retriable:
        code = "provider_unavailable"
    else:
        code = "provider_rejected"
    return PublicError(code, with_provider_code(MESSAGES[code], number, exc.http_status), number)


def with_provider_code(text: str, number: str | None, http_status: int | None) -> str:
    """Our text, naming the provider's numeric code (or HTTP status) in our own words."""
    if number is not None:
        return f"{text} (provider error code {number})"
    if http_status is not None and (http_status >= 400 or 300 <= http_status < 400):
        return f"{text} (HTTP {http_status})"
    return text


def public(code: str) -> PublicError:
    """One of our codes with its text."""
    return PublicError(code, MESSAGES[code])

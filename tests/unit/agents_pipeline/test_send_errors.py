"""What a workspace sees of a provider error: our code and text, the numeric provider code."""

from __future__ import annotations

from typing import Any

import pytest

from agents_pipeline.errors import ProviderError
from agents_pipeline.send_errors import MESSAGES, public_error

LEAK = "internal-db.corp:5432 password=hunter2"


def err(code: str, status: int | None, *, retriable: bool = False, window: bool = False) -> Any:
    """A provider error whose every text is something a workspace must not see."""
    return ProviderError(
        LEAK, code=code, http_status=status, retriable=retriable, outside_window=window
    )


@pytest.mark.parametrize(
    ("error", "code", "provider_code"),
    [
        (err("131026", 400), "provider_rejected", "131026"),
        (err("130429", 400, retriable=True), "rate_limited", "130429"),
        (err("http_429", 429, retriable=True), "rate_limited", None),
        (err("http_503", 503, retriable=True), "provider_unavailable", None),
        (err("131000", 500, retriable=True), "provider_unavailable", "131000"),
        (err("190", 401), "provider_auth_failed", "190"),
        (err("http_403", 403), "provider_auth_failed", None),
        (err("131047", 400, window=True), "outside_window", "131047"),
        # Evolution bodies put free text where a code would be: it is dropped
        (err("ECONNREFUSED", 503, retriable=True), "provider_unavailable", None),
        (err(LEAK, 400), "provider_rejected", None),
        (err("timeout", None, retriable=True), "timeout", None),
        (err("connection_error", None, retriable=True), "connection_error", None),
        (err("destination_not_allowed", None), "destination_not_allowed", None),
        (err("redirect_not_followed", 302), "redirect_not_followed", None),
        (err("invalid_response", 200), "invalid_response", None),
    ],
)
def test_provider_errors_map_to_our_codes(
    error: ProviderError, code: str, provider_code: str | None
) -> None:
    shown = public_error(error)
    assert (shown.code, shown.provider_code) == (code, provider_code)
    assert shown.message.startswith(MESSAGES[code])
    assert LEAK not in shown.message and "hunter2" not in shown.message
    if provider_code:
        assert provider_code in shown.message

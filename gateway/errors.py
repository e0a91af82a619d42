"""The API's one error format, and the middleware that produces it.

    ApiError(status, code, message, details)    raised by handlers; rendered by
    response_for() (the gateway's middleware) as
    {"error": {"code": "snake_case", "message": "...", "details": {} | null}}

Anything else that escapes a handler becomes a 500 ``internal_error`` with no
internals in the body (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiohttp import web

from storage.pagination import BadCursor

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error the client must see, with its HTTP status and a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def not_found(what: str) -> ApiError:
    """404 for an object that does not exist in the caller's workspace."""
    return ApiError(404, "not_found", f"{what} not found")


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Render the error format."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def response_for(request: web.Request, exc: BaseException) -> web.StreamResponse:
    """The error format for anything a handler raised (re-raises redirects)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, BadCursor):
        return error_response(400, "invalid_cursor", "this cursor was not issued by this list")
    if isinstance(exc, psycopg.DataError):
        # A value PostgreSQL refuses (NUL in a query parameter or a file name, a number out
        # of range) that no check before it caught: the request's fault, not the server's.
        log.warning("data refused on %s %s: %s", request.method, request.path, exc)
        return error_response(400, "invalid_data", "the request holds a value we cannot store")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else "no such route"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, message, None, headers)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")

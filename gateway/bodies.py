"""Reading and validating request bodies and query parameters into pydantic models."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.errors import ApiError
from storage.pagination import MAX_LIMIT
from streams import storable

M = TypeVar("M", bound=BaseModel)


async def read_raw(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes with a 413."""
    if request.content_length is not None:
        if request.content_length > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
        return await request.read()  # the length is known and within the limit
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
    return bytes(body)


def parse_json(raw: bytes) -> Any:
    """JSON from bytes that every stage can store, or a 400: ``invalid_json`` (not UTF-8
    JSON, or NaN/Infinity), ``unsupported_character`` (NUL or a lone UTF-16 surrogate, as
    a byte or an escape: PostgreSQL refuses them) or ``json_too_deep`` (more than
    ``MAX_JSON_DEPTH`` levels). Refused, never stripped: a signed body must reach the
    stream as it was signed, and a changed message is not the one the contact sent."""
    try:
        return storable.loads(raw)
    except storable.UnstorableJson as exc:
        raise ApiError(400, exc.code, exc.message) from None


def validation_error(exc: ValidationError) -> ApiError:
    """422 listing every field that is wrong."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return ApiError(422, "validation_error", "the request body is not valid", {"errors": errors})


def validate(model: type[M], data: Any) -> M:
    """Validate decoded JSON into ``model`` (extra fields are refused by the models)."""
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def read_model(request: web.Request, model: type[M], limit: int = 1024 * 1024) -> M:
    """Read, decode and validate a JSON body."""
    return validate(model, parse_json(await read_raw(request, limit)))


def path_uuid(request: web.Request, name: str, what: str) -> UUID:
    """A UUID path parameter; anything else is a 404 for ``what`` (it cannot exist)."""
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise ApiError(404, "not_found", f"{what} not found") from None


def query_uuid(request: web.Request, name: str) -> UUID | None:
    """An optional UUID query parameter (400 when malformed)."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a UUID") from None


def pagination(request: web.Request) -> tuple[int, str | None]:
    """``limit`` (1..200, default 50) and ``cursor`` from the query string."""
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_parameter", f"limit must be between 1 and {MAX_LIMIT}")
    return limit, request.query.get("cursor") or None

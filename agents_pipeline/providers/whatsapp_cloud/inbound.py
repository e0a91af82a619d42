"""WhatsApp Cloud API webhooks in: split a POST into items, and an item into canonical events.

A POST is ``entry[] x changes[] x (messages[] | statuses[] | errors[] | message_echoes[])``.
Each item carries a reduced copy of the POST that holds only itself and the contacts that
name its user, so ``normalize`` needs nothing but the item.

Identity: Cloud names a user by phone (``from`` / ``wa_id``) and, since the username
rollout, by a business-scoped user id (BSUID, ``user_id`` / ``from_user_id``) that may
come alone. ``external_id`` is the phone when given, else the BSUID (else the parent
BSUID); every other identifier goes to ``alt_ids``.

Parsing policy: a missing or wrongly typed *required* field raises ``UnsupportedPayload``;
an optional field we only copy (caption, sha256, ...) with a wrong type is dropped, so a
message is never lost over a decoration.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers.base import ItemKind, NormalizedEvent, WebhookItem
from streams.contracts import (
    ContactCard,
    ContactRef,
    InboundMessage,
    Location,
    Media,
    ProviderName,
    RawHeaders,
    Reaction,
    Reply,
    StatusName,
    StatusUpdate,
)

PROVIDER = ProviderName.WHATSAPP_CLOUD
OBJECT = "whatsapp_business_account"

# value list -> (item kind, key prefix); order is the order items are emitted in.
_ITEM_LISTS: tuple[tuple[str, ItemKind, str], ...] = (
    ("messages", "message", "wa:msg"),
    ("message_echoes", "message", "wa:echo"),
    ("statuses", "status", "wa:st"),
    ("errors", "event", "wa:err"),
)
_MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
_STATUSES: dict[str, StatusName] = {
    "accepted": "accepted",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",
    "failed": "failed",
    "deleted": "deleted",
}


# --- small typed readers of untrusted JSON --------------------------------------------------


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnsupportedPayload(f"Cloud webhook: {what} is not an object", code="bad_shape")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise UnsupportedPayload(f"Cloud webhook: {what} is not a list", code="bad_shape")
    return value


def _opt_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _required_str(obj: dict[str, Any], key: str, what: str) -> str:
    value = _str(obj, key)
    if value is None:
        raise UnsupportedPayload(f"Cloud webhook: {what} has no {key}", code="missing_field")
    return value


def _number(obj: dict[str, Any], key: str, what: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedPayload(f"Cloud webhook: {what}.{key} is not a number", code="bad_shape")
    return float(value)


def _timestamp(value: Any, default: datetime) -> datetime:
    """Unix seconds (a string, as Cloud sends them, or a number) as an aware UTC datetime."""
    if value is None:
        return default
    try:
        seconds = int(value) if isinstance(value, str) else value
    except ValueError:
        seconds = None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise UnsupportedPayload("Cloud webhook: timestamp is not Unix seconds", code="bad_shape")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise UnsupportedPayload("Cloud webhook: timestamp out of range", code="bad_shape") from exc


def _code(value: Any) -> str | None:
    """A provider error code as a string (Cloud sends numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        return None
    return str(value)


def _is_phone(value: str) -> bool:
    return value.removeprefix("+").isdigit()


def _sha256(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- split ----------------------------------------------------------------------------------


def split(body: Any, *, message_id: str | None = None) -> list[WebhookItem]:
    """Split a Cloud POST into one item per message, echo, status and error, keyed for dedup."""
    del message_id  # Cloud items always carry their own ids.
    if not isinstance(body, dict) or body.get("object") != OBJECT:
        raise UnsupportedPayload("not a WhatsApp Cloud webhook", code="not_cloud_webhook")
    items: list[WebhookItem] = []
    seen: set[str] = set()
    for raw_entry in _list(body.get("entry"), "entry"):
        entry = _dict(raw_entry, "entry[]")
        for raw_change in _list(entry.get("changes", []), "entry[].changes"):
            change = _dict(raw_change, "changes[]")
            if change.get("value") is None:
                continue
            for item in _split_value(entry, change, _dict(change["value"], "changes[].value")):
                if item.key not in seen:  # the same item twice in one POST is processed once
                    seen.add(item.key)
                    items.append(item)
    return items


def _split_value(
    entry: dict[str, Any], change: dict[str, Any], value: dict[str, Any]
) -> list[WebhookItem]:
    contacts = [_dict(c, "contacts[]") for c in _list(value.get("contacts", []), "contacts")]
    items: list[WebhookItem] = []
    for list_key, kind, prefix in _ITEM_LISTS:
        if value.get(list_key) is None:
            continue
        elements = _list(value[list_key], list_key)
        for raw in elements:
            element = _dict(raw, f"{list_key}[]")
            matched = _matching_contacts(list_key, element, contacts, alone=len(elements) == 1)
            payload = _reduced(entry, change, value, matched, list_key, element)
            items.append(
                WebhookItem(
                    key=_key(list_key, prefix, element, payload), kind=kind, payload=payload
                )
            )
    return items


def _reduced(
    entry: dict[str, Any],
    change: dict[str, Any],
    value: dict[str, Any],
    contacts: list[dict[str, Any]],
    list_key: str,
    element: dict[str, Any],
) -> dict[str, Any]:
    """A single-item copy of the POST, in Cloud's own shape."""
    new_value: dict[str, Any] = {
        k: value[k] for k in ("messaging_product", "metadata") if k in value
    }
    if contacts:
        new_value["contacts"] = contacts
    new_value[list_key] = [element]
    new_change: dict[str, Any] = {"value": new_value}
    if "field" in change:
        new_change["field"] = change["field"]
    new_entry: dict[str, Any] = {"changes": [new_change]}
    if "id" in entry:
        new_entry["id"] = entry["id"]
    return {"object": OBJECT, "entry": [new_entry]}


def _key(list_key: str, prefix: str, element: dict[str, Any], payload: dict[str, Any]) -> str:
    """Idempotency key: provider ids when given, else a hash of the item's reduced payload."""
    item_id = _str(element, "id")
    if list_key == "statuses":
        status = _str(element, "status")
        if item_id and status:
            return f"{prefix}:{item_id}:{status}"
    elif list_key != "errors" and item_id:
        return f"{prefix}:{item_id}"
    return f"{prefix}:h:{_sha256(payload)}"


def _user_refs(list_key: str, element: dict[str, Any]) -> tuple[str | None, str | None]:
    """(phone-or-id, BSUID) naming the user an item is about: sender, echo or status recipient."""
    if list_key == "messages":
        return _str(element, "from"), _str(element, "from_user_id") or _str(element, "user_id")
    if list_key == "message_echoes":
        return _str(element, "to"), _str(element, "to_user_id")
    if list_key == "statuses":
        return _str(element, "recipient_id"), _str(element, "recipient_user_id")
    return None, None


def _matching_contacts(
    list_key: str, element: dict[str, Any], contacts: list[dict[str, Any]], *, alone: bool
) -> list[dict[str, Any]]:
    """The contacts that name this item's user; the only contact when the item is alone."""
    if list_key == "errors" or not contacts:
        return []
    ref, user_id = _user_refs(list_key, element)
    matched = [
        c
        for c in contacts
        if (ref and ref in (_str(c, "wa_id"), _str(c, "user_id")))
        or (user_id and user_id == _str(c, "user_id"))
    ]
    if not matched and alone and len(contacts) == 1:
        return contacts
    return matched


# --- normalize ------------------------------------------------------------------------------


def normalize(item: WebhookItem, *, headers: RawHeaders) -> list[NormalizedEvent]:
    """Turn one Cloud item into an InboundMessage or StatusUpdate (none for an unmatchable one)."""
    try:
        return _normalize(item, headers)
    except ValidationError as exc:  # a value Cloud sent that our contracts refuse
        raise UnsupportedPayload(f"Cloud webhook: {exc}", code="invalid_value") from exc


def _normalize(item: WebhookItem, headers: RawHeaders) -> list[NormalizedEvent]:
    payload = _dict(item.payload, "item")
    entry = _dict(_single(payload.get("entry"), "entry"), "entry[]")
    change = _dict(_single(entry.get("changes"), "changes"), "changes[]")
    value = _dict(change.get("value"), "changes[].value")
    common: dict[str, Any] = {
        "trace_id": headers.trace_id,
        "event_key": item.key,
        "workspace_id": headers.workspace_id,
        "channel_id": headers.channel_id,
        "provider": PROVIDER,
        "received_at": headers.received_at,
    }
    for list_key, _, _ in _ITEM_LISTS:
        if value.get(list_key) is None:
            continue
        element = _dict(_single(value[list_key], list_key), f"{list_key}[]")
        if list_key in ("messages", "message_echoes") and element.get("group_id") is not None:
            # Groups are not supported: the agent holds one-to-one conversations, and keying
            # a group message on its sender would answer them privately about a group chat.
            return []
        contact = _first_contact(value, list_key, element)
        if list_key == "messages":
            return [_message(element, contact, common, from_me=False)]
        if list_key == "message_echoes":
            return [_message(element, contact, common, from_me=True)]
        if list_key == "statuses":
            return _status(element, contact, common)
        raise _error(element)
    raise UnsupportedPayload(
        "Cloud webhook: item holds no message, status or error", code="empty_item"
    )


def _single(value: Any, what: str) -> Any:
    items = _list(value, what)
    if len(items) != 1:
        raise UnsupportedPayload(
            f"Cloud webhook: {what} must hold exactly one element", code="bad_shape"
        )
    return items[0]


def _first_contact(value: dict[str, Any], list_key: str, element: dict[str, Any]) -> dict[str, Any]:
    raw = value.get("contacts")
    contacts = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
    matched = _matching_contacts(list_key, element, contacts, alone=True)
    return matched[0] if matched else {}


def _contact_ref(
    ref: str | None, user_id: str | None, contact: dict[str, Any], *, name: bool
) -> ContactRef:
    """Phone when known, else the BSUID, as external_id; the other ids as alt_ids."""
    phones: list[str] = []
    user_ids: list[str] = []
    for candidate in (ref, _str(contact, "wa_id")):
        if candidate:
            (phones if _is_phone(candidate) else user_ids).append(candidate)
    user_ids += [u for u in (user_id, _str(contact, "user_id")) if u]
    parent = _str(contact, "parent_user_id")
    ordered = list(dict.fromkeys([*phones, *user_ids, *([parent] if parent else [])]))
    if not ordered:
        raise UnsupportedPayload("Cloud webhook: item names no user", code="no_user")
    profile = _opt_dict(contact, "profile")
    return ContactRef(
        external_id=ordered[0],
        alt_ids=ordered[1:],
        phone=phones[0] if phones else None,
        name=_str(profile, "name") if name else None,
    )


def _message(
    msg: dict[str, Any], contact: dict[str, Any], common: dict[str, Any], *, from_me: bool
) -> InboundMessage:
    list_key = "message_echoes" if from_me else "messages"
    ref, user_id = _user_refs(list_key, msg)
    return InboundMessage(
        **common,
        **_content(msg),
        provider_message_id=_required_str(msg, "id", "message"),
        from_me=from_me,
        contact=_contact_ref(ref, user_id, contact, name=True),
        context_message_id=_str(_opt_dict(msg, "context"), "id"),
        sent_at=_timestamp(msg.get("timestamp"), common["received_at"]),
    )


def _content(msg: dict[str, Any]) -> dict[str, Any]:
    """Type and payload fields of a message, by its ``type``."""
    mtype = _str(msg, "type")
    if mtype == "text":
        return {"type": "text", "text": _required_str(_part(msg, "text"), "body", "text")}
    if mtype in _MEDIA_TYPES:
        return _media(mtype, _part(msg, mtype))
    if mtype == "location":
        return _location(_part(msg, "location"))
    if mtype == "contacts":
        cards = [_card(_dict(c, "contacts[]")) for c in _list(msg.get("contacts"), "contacts")]
        return {"type": "contacts", "contacts": cards}
    if mtype == "interactive":
        return _interactive(_part(msg, "interactive"))
    if mtype == "button":
        button = _part(msg, "button")
        reply = Reply(
            kind="template_button", id=_str(button, "payload"), title=_str(button, "text")
        )
        return {"type": "button", "text": reply.title or reply.id, "reply": reply}
    if mtype == "reaction":
        reaction = _part(msg, "reaction")
        return {
            "type": "reaction",
            "reaction": Reaction(
                message_id=_required_str(reaction, "message_id", "reaction"),
                emoji=_str(reaction, "emoji"),  # empty emoji: the reaction was removed
            ),
        }
    # order, system, referral, request_welcome, unsupported, ... : kept, never answered as text
    return {
        "type": "unsupported",
        "text": _str(_opt_dict(msg, "text"), "body") or _str(_opt_dict(msg, "system"), "body"),
    }


def _part(msg: dict[str, Any], key: str) -> dict[str, Any]:
    return _dict(msg.get(key), f"message.{key}")


def _media(mtype: str, part: dict[str, Any]) -> dict[str, Any]:
    if not (_str(part, "id") or _str(part, "url")):
        raise UnsupportedPayload(
            f"Cloud webhook: {mtype} has neither id nor url", code="missing_field"
        )
    media = Media(
        id=_str(part, "id"),
        url=_str(part, "url"),
        mime_type=_str(part, "mime_type"),
        caption=_str(part, "caption"),
        filename=_str(part, "filename"),
        sha256=_str(part, "sha256"),
        voice=part.get("voice") is True,
    )
    return {"type": mtype, "text": media.caption, "media": media}


def _location(part: dict[str, Any]) -> dict[str, Any]:
    location = Location(
        latitude=_number(part, "latitude", "location"),
        longitude=_number(part, "longitude", "location"),
        name=_str(part, "name"),
        address=_str(part, "address"),
        url=_str(part, "url"),
    )
    return {"type": "location", "location": location}


def _card(card: dict[str, Any]) -> ContactCard:
    name = _opt_dict(card, "name")
    full = _str(name, "formatted_name") or " ".join(
        n for n in (_str(name, "first_name"), _str(name, "last_name")) if n
    )
    raw_phones = card.get("phones")
    phones = [
        _str(p, "wa_id") or _str(p, "phone")
        for p in (raw_phones if isinstance(raw_phones, list) else [])
        if isinstance(p, dict)
    ]
    return ContactCard(name=full or None, phones=[p for p in phones if p])


def _interactive(part: dict[str, Any]) -> dict[str, Any]:
    kind = _str(part, "type")
    if kind in ("button_reply", "list_reply"):
        answer = _dict(part.get(kind), f"interactive.{kind}")
        reply = Reply(
            kind=kind,
            id=_str(answer, "id"),
            title=_str(answer, "title"),
            description=_str(answer, "description"),
        )
        return {"type": "interactive", "text": reply.title or reply.id, "reply": reply}
    # nfm_reply (Flows) and future kinds: no Reply kind for them in the contracts yet.
    return {"type": "unsupported", "text": _str(_opt_dict(part, kind or ""), "body")}


def _status(
    status: dict[str, Any], contact: dict[str, Any], common: dict[str, Any]
) -> list[NormalizedEvent]:
    status_id = _str(status, "id")
    if status_id is None:  # nothing to match it to (cloud_multi.json): ignored, not an error
        return []
    raw = _required_str(status, "status", "status")
    name = _STATUSES.get(raw)
    if name is None:
        raise UnsupportedPayload(f"Cloud webhook: unknown status {raw!r}", code="unknown_status")
    errors = status.get("errors")
    first_error = errors[0] if isinstance(errors, list) and errors else {}
    first_error = first_error if isinstance(first_error, dict) else {}
    ref, user_id = _user_refs("statuses", status)
    has_recipient = ref or user_id or _str(contact, "wa_id") or _str(contact, "user_id")
    recipient = _contact_ref(ref, user_id, contact, name=False) if has_recipient else None
    return [
        StatusUpdate(
            **common,
            provider_message_id=status_id,
            status=name,
            recipient_id=recipient.external_id if recipient else None,
            occurred_at=_timestamp(status.get("timestamp"), common["received_at"]),
            error_code=_code(first_error.get("code")),
            error_title=_str(first_error, "title") or _str(first_error, "message"),
        )
    ]


def _error(error: dict[str, Any]) -> UnsupportedPayload:
    """A webhook-level error Cloud reports (value.errors): dead-lettered with its code."""
    title = _str(error, "title") or _str(error, "message") or "no title"
    code_str = _code(error.get("code"))
    return UnsupportedPayload(f"Cloud webhook error {code_str}: {title}", code=code_str)

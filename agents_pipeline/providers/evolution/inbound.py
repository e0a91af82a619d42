"""Evolution API (v2) webhooks in: split a body into items, and an item into canonical events.

A body is ``{event, instance, data, destination, date_time, sender, server_url, apikey}``;
``data`` is one record (a list of them in some versions). Each item keeps the envelope
minus ``apikey`` (a secret) with ``data`` narrowed to its one record, and message records
lose ``message.base64`` (inline media can be megabytes: we keep url/mimetype/caption).

Identity: a chat is a JID, ``<user>[:device]@<server>``. ``@s.whatsapp.net`` carries the
phone; ``@lid`` is WhatsApp's privacy id, whose phone (when shared) comes in
``remoteJidAlt`` (or ``senderPn`` in older builds). ``external_id`` is the phone digits
whenever known from any of them, else the ``<lid>@lid`` JID; the other id goes to
``alt_ids``. So a person keeps one external_id whether a webhook names them by phone or
by lid with the phone beside it.

Parsing policy: a missing or wrongly typed *required* field raises ``UnsupportedPayload``;
an optional field we only copy with a wrong type is dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers.base import NormalizedEvent, WebhookItem, strip_fields
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

PROVIDER = ProviderName.EVOLUTION

MESSAGE_EVENTS = frozenset({"messages.upsert", "send.message"})
STATUS_EVENT = "messages.update"

_PHONE_SERVERS = frozenset({"s.whatsapp.net", "c.us"})
_LID_SERVER = "lid"
# Groups are not supported: the agent holds one-to-one conversations, a reply in a group
# would go to every member, and a conversation keyed on the group would mix people.
# Broadcast (status@broadcast: stories) and newsletters (channels) are not conversations.
_IGNORED_SERVERS = frozenset({"g.us", "broadcast", "newsletter"})

_STATUSES: dict[str, StatusName] = {
    "PENDING": "accepted",
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "read",
    "ERROR": "failed",
    "DELETED": "deleted",
}
# Baileys' numeric WebMessageInfo.Status, as older builds send it.
_NUMERIC_STATUSES = ("ERROR", "PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")

# Containers whose inner ``message`` is the real content.
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
)
# Keys that carry no content of their own: a record holding only these is protocol noise
# (revokes, edits, key distribution) and produces no event.
_PLUMBING = frozenset(
    {
        "messageContextInfo",
        "senderKeyDistributionMessage",
        "protocolMessage",
        "editedMessage",
        "mediaUrl",
        "base64",
    }
)
_MEDIA_KEYS = {
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_WAID = re.compile(r"waid=(\d+)", re.IGNORECASE)


# --- small typed readers of untrusted JSON --------------------------------------------------


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnsupportedPayload(f"Evolution webhook: {what} is not an object", code="bad_shape")
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
        raise UnsupportedPayload(f"Evolution webhook: {what} has no {key}", code="missing_field")
    return value


def _number(obj: dict[str, Any], key: str, what: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedPayload(
            f"Evolution webhook: {what}.{key} is not a number", code="bad_shape"
        )
    return float(value)


def _sha256(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def event_name(raw: str) -> str:
    """One spelling per event: ``MESSAGES_UPSERT``, ``messages-upsert`` -> ``messages.upsert``."""
    return raw.strip().lower().replace("_", ".").replace("-", ".")


def _timestamp(value: Any, default: datetime) -> datetime:
    """``messageTimestamp``: seconds as a number, a string or a protobuf Long ``{low, high}``."""
    if value is None:
        return default
    if isinstance(value, dict) and isinstance(value.get("low"), int):
        high = value.get("high")
        value = (value["low"] & 0xFFFFFFFF) + (high if isinstance(high, int) else 0) * 2**32
    try:
        seconds = int(value) if isinstance(value, str) else value
    except ValueError:
        seconds = None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise UnsupportedPayload(
            "Evolution webhook: timestamp is not Unix seconds", code="bad_shape"
        )
    if seconds > 10**11:  # milliseconds: no message was sent after the year 5138
        seconds = seconds / 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise UnsupportedPayload(
            "Evolution webhook: timestamp out of range", code="bad_shape"
        ) from exc


def _iso(value: Any, default: datetime) -> datetime:
    """The envelope's ``date_time`` (ISO 8601; UTC when it names no zone)."""
    if not isinstance(value, str):
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return default
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- redact ---------------------------------------------------------------------------------

# Fields that carry a credential, at any depth of a body (matched lowercased without '_' and
# '-'): the instance's API key Evolution puts on every event (``apikey``), tokens and
# passwords of instance events, what links a new device to the number (``qrcode.updated``'s
# QR and pairing codes), and a message's end-to-end ``messageSecret``. No item key or
# normalizer reads any of them.
CREDENTIAL_FIELDS = frozenset(
    {
        "apikey",
        "token",
        "accesstoken",
        "authorization",
        "password",
        "secret",
        "hash",  # an instance's API key in Evolution's instance events
        "jwt",
        "qrcode",
        "pairingcode",
        "messagesecret",
    }
)


def redact(body: dict[str, Any]) -> bool:
    """Delete every credential field of an Evolution body in place; True when one was."""
    return strip_fields(body, CREDENTIAL_FIELDS)


# --- split ----------------------------------------------------------------------------------


def split(body: Any, *, message_id: str | None = None) -> list[WebhookItem]:
    """Split an Evolution body into one item per message or status record, or one event item."""
    del message_id  # Evolution records carry their own ids.
    if not isinstance(body, dict):
        raise UnsupportedPayload("Evolution webhook: body is not an object", code="bad_shape")
    raw_event = body.get("event")
    if not isinstance(raw_event, str) or not raw_event.strip():
        raise UnsupportedPayload("Evolution webhook: no event", code="no_event")
    name = event_name(raw_event)
    envelope = {k: v for k, v in body.items() if k not in ("data", "apikey")}
    envelope["event"] = name
    data = body.get("data")
    if name not in MESSAGE_EVENTS and name != STATUS_EVENT:
        payload = {**envelope, "data": data}
        return [WebhookItem(key=f"evo:evt:h:{_sha256(payload)}", kind="event", payload=payload)]
    records = data if isinstance(data, list) else [data]
    items: list[WebhookItem] = []
    seen: set[str] = set()
    for raw in records:
        record = _dict(raw, "data")
        if name in MESSAGE_EVENTS:
            payload = {**envelope, "data": _without_base64(record)}
            item = WebhookItem(key=_message_key(record, payload), kind="message", payload=payload)
        else:
            payload = {**envelope, "data": record}
            item = WebhookItem(key=_status_key(record, payload), kind="status", payload=payload)
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)
    return items


def _without_base64(record: dict[str, Any]) -> dict[str, Any]:
    """The record with ``message.base64`` dropped (shallow copies; the body stays untouched)."""
    message = record.get("message")
    if not isinstance(message, dict) or "base64" not in message:
        return record
    return {**record, "message": {k: v for k, v in message.items() if k != "base64"}}


def _message_key(record: dict[str, Any], payload: dict[str, Any]) -> str:
    message_id = _str(_opt_dict(record, "key"), "id")
    return f"evo:msg:{message_id}" if message_id else f"evo:msg:h:{_sha256(payload)}"


def _status_fields(record: dict[str, Any]) -> tuple[str | None, Any]:
    """(WhatsApp message id, raw status) of a messages.update record, v2 or Baileys shape."""
    message_id = _str(record, "keyId") or _str(_opt_dict(record, "key"), "id")
    status = record.get("status")
    if status is None:
        status = _opt_dict(record, "update").get("status")
    return message_id, status


def _status_key(record: dict[str, Any], payload: dict[str, Any]) -> str:
    message_id, status = _status_fields(record)
    if message_id and isinstance(status, str | int) and not isinstance(status, bool):
        return f"evo:st:{message_id}:{status}"
    return f"evo:st:h:{_sha256(payload)}"


# --- identity -------------------------------------------------------------------------------


def _jid(raw: str) -> tuple[str, str]:
    """(user without ``:device``, server) of a JID."""
    user, at, server = raw.rpartition("@")
    if not at or not user:
        raise UnsupportedPayload(f"Evolution webhook: {raw!r} is not a JID", code="bad_jid")
    return user.split(":", 1)[0], server.lower()


def _contact_ref(jids: list[Any], name: str | None) -> ContactRef:
    """Phone digits when any JID gives them, else the lid JID, as external_id."""
    phone: str | None = None
    lid: str | None = None
    for index, raw in enumerate(jids):
        if not isinstance(raw, str):
            continue
        try:
            user, server = _jid(raw)
        except UnsupportedPayload:
            if index == 0:  # the chat itself must be readable; alternates may be junk
                raise
            continue
        if server in _PHONE_SERVERS and user.isdigit():
            phone = phone or user
        elif server == _LID_SERVER:
            lid = lid or f"{user}@{_LID_SERVER}"
    external_id = phone or lid
    if external_id is None:
        raise UnsupportedPayload(
            f"Evolution webhook: {jids[0]!r} names neither a phone nor a lid", code="bad_jid"
        )
    return ContactRef(
        external_id=external_id,
        alt_ids=[lid] if phone and lid else [],
        phone=phone,
        name=name,
    )


def _chat_jids(key: dict[str, Any], record: dict[str, Any]) -> list[Any]:
    """The remote JID first, then the alternates that may name the same person."""
    return [
        key.get("remoteJid") or record.get("remoteJid"),
        key.get("remoteJidAlt") or record.get("remoteJidAlt"),
        key.get("senderPn"),
        key.get("senderLid"),
    ]


def _ignored_chat(remote_jid: Any) -> bool:
    """Whether the chat is a group, a broadcast or a channel (see ``_IGNORED_SERVERS``)."""
    if not isinstance(remote_jid, str):
        raise UnsupportedPayload("Evolution webhook: no remoteJid", code="missing_field")
    return _jid(remote_jid)[1] in _IGNORED_SERVERS


# --- normalize ------------------------------------------------------------------------------


def normalize(item: WebhookItem, *, headers: RawHeaders) -> list[NormalizedEvent]:
    """Turn one Evolution item into an InboundMessage or StatusUpdate (none for other events)."""
    try:
        return _normalize(item, headers)
    except ValidationError as exc:  # a value Evolution sent that our contracts refuse
        raise UnsupportedPayload(f"Evolution webhook: {exc}", code="invalid_value") from exc


def _normalize(item: WebhookItem, headers: RawHeaders) -> list[NormalizedEvent]:
    payload = _dict(item.payload, "item")
    raw_event = payload.get("event")
    if not isinstance(raw_event, str):
        raise UnsupportedPayload("Evolution webhook: no event", code="no_event")
    name = event_name(raw_event)
    if name not in MESSAGE_EVENTS and name != STATUS_EVENT:
        return []  # connection.update, qrcode.updated, ...: nothing for the conversation
    record = _dict(payload.get("data"), "data")
    common: dict[str, Any] = {
        "trace_id": headers.trace_id,
        "event_key": item.key,
        "workspace_id": headers.workspace_id,
        "channel_id": headers.channel_id,
        "provider": PROVIDER,
        "received_at": headers.received_at,
    }
    if name == STATUS_EVENT:
        return _status(record, payload, common)
    return _message(record, common, sent_event=name == "send.message")


def _message(
    record: dict[str, Any], common: dict[str, Any], *, sent_event: bool
) -> list[NormalizedEvent]:
    key = _dict(record.get("key"), "data.key")
    message_id = _required_str(key, "id", "data.key")
    jids = _chat_jids(key, record)
    if _ignored_chat(jids[0]):
        return []
    # fromMe / send.message: sent from the business's own number; the contact is the other side.
    from_me = sent_event or key.get("fromMe") is True
    push_name = None if from_me else _str(record, "pushName")
    raw_message = record.get("message")
    message = {} if raw_message is None else _dict(raw_message, "data.message")
    content = _content(_unwrap(message), record)
    if content is None:
        return []
    return [
        InboundMessage(
            **common,
            **content,
            provider_message_id=message_id,
            from_me=from_me,
            contact=_contact_ref(jids, push_name),
            sent_at=_timestamp(record.get("messageTimestamp"), common["received_at"]),
        )
    ]


def _unwrap(message: dict[str, Any]) -> dict[str, Any]:
    """The content inside ephemeral / view-once / document-with-caption containers."""
    for _ in range(3):
        inner = next(
            (_opt_dict(message, w).get("message") for w in _WRAPPERS if w in message), None
        )
        if not isinstance(inner, dict):
            return message
        message = inner
    return message


def _context_id(part: dict[str, Any], record: dict[str, Any]) -> str | None:
    """The id of the message replied to (``contextInfo.stanzaId``), in the part or the record."""
    return _str(_opt_dict(part, "contextInfo"), "stanzaId") or _str(
        _opt_dict(record, "contextInfo"), "stanzaId"
    )


def _content(message: dict[str, Any], record: dict[str, Any]) -> dict[str, Any] | None:
    """Type and payload fields of a message; None for protocol noise."""
    if isinstance(message.get("conversation"), str):
        return {
            "type": "text",
            "text": message["conversation"],
            "context_message_id": _context_id({}, record),
        }
    if "extendedTextMessage" in message:
        part = _dict(message["extendedTextMessage"], "extendedTextMessage")
        return {
            "type": "text",
            "text": _required_str(part, "text", "extendedTextMessage"),
            "context_message_id": _context_id(part, record),
        }
    for key, mtype in _MEDIA_KEYS.items():
        if key in message:
            return _media(mtype, _dict(message[key], key), message, record)
    for key in ("locationMessage", "liveLocationMessage"):
        if key in message:
            return _location(_dict(message[key], key), record)
    if "contactMessage" in message:
        card = _card(_dict(message["contactMessage"], "contactMessage"))
        return {"type": "contacts", "contacts": [card]}
    if "contactsArrayMessage" in message:
        part = _dict(message["contactsArrayMessage"], "contactsArrayMessage")
        raw_cards = part.get("contacts")
        cards = (
            [_card(c) for c in raw_cards if isinstance(c, dict)]
            if isinstance(raw_cards, list)
            else []
        )
        return {"type": "contacts", "contacts": cards}
    reply = _reply(message)
    if reply is not None:
        return reply
    if "reactionMessage" in message:
        part = _dict(message["reactionMessage"], "reactionMessage")
        target = _required_str(_dict(part.get("key"), "reactionMessage.key"), "id", "reaction")
        # empty text: the reaction was removed
        return {
            "type": "reaction",
            "reaction": Reaction(message_id=target, emoji=_str(part, "text")),
        }
    if message and set(message) <= _PLUMBING:
        return None
    return {"type": "unsupported"}


def _media(
    mtype: str, part: dict[str, Any], message: dict[str, Any], record: dict[str, Any]
) -> dict[str, Any]:
    # mediaUrl (set when Evolution stores media in S3) is fetchable; part.url is encrypted.
    media = Media(
        url=_str(message, "mediaUrl") or _str(part, "url"),
        mime_type=_str(part, "mimetype"),
        caption=_str(part, "caption"),
        filename=_str(part, "fileName"),
        sha256=_str(part, "fileSha256"),
        voice=mtype == "audio" and part.get("ptt") is True,
    )
    return {
        "type": mtype,
        "text": media.caption,
        "media": media,
        "context_message_id": _context_id(part, record),
    }


def _location(part: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    location = Location(
        latitude=_number(part, "degreesLatitude", "locationMessage"),
        longitude=_number(part, "degreesLongitude", "locationMessage"),
        name=_str(part, "name"),
        address=_str(part, "address"),
        url=_str(part, "url"),
    )
    return {
        "type": "location",
        "location": location,
        "context_message_id": _context_id(part, record),
    }


def _card(part: dict[str, Any]) -> ContactCard:
    """A shared contact: its display name and the phones of its vCard."""
    phones: list[str] = []
    for line in (_str(part, "vcard") or "").splitlines():
        head, sep, value = line.partition(":")
        if not sep or not head.upper().split(";")[0].endswith("TEL"):
            continue
        waid = _WAID.search(head)
        phone = waid.group(1) if waid else value.strip()
        if phone:
            phones.append(phone)
    return ContactCard(name=_str(part, "displayName"), phones=phones)


def _reply(message: dict[str, Any]) -> dict[str, Any] | None:
    """Button, list and template quick-reply answers."""
    if "buttonsResponseMessage" in message:
        part = _dict(message["buttonsResponseMessage"], "buttonsResponseMessage")
        reply = Reply(
            kind="button_reply",
            id=_str(part, "selectedButtonId"),
            title=_str(part, "selectedDisplayText"),
        )
        mtype = "interactive"
    elif "listResponseMessage" in message:
        part = _dict(message["listResponseMessage"], "listResponseMessage")
        reply = Reply(
            kind="list_reply",
            id=_str(_opt_dict(part, "singleSelectReply"), "selectedRowId"),
            title=_str(part, "title"),
            description=_str(part, "description"),
        )
        mtype = "interactive"
    elif "templateButtonReplyMessage" in message:
        part = _dict(message["templateButtonReplyMessage"], "templateButtonReplyMessage")
        reply = Reply(
            kind="template_button",
            id=_str(part, "selectedId"),
            title=_str(part, "selectedDisplayText"),
        )
        mtype = "button"
    else:
        return None
    return {"type": mtype, "text": reply.title or reply.id, "reply": reply}


def _status(
    record: dict[str, Any], payload: dict[str, Any], common: dict[str, Any]
) -> list[NormalizedEvent]:
    message_id, raw_status = _status_fields(record)
    if raw_status is None:  # an edit or a poll vote, not a delivery status
        return []
    if message_id is None:
        raise UnsupportedPayload("Evolution webhook: status without keyId", code="missing_field")
    key = _opt_dict(record, "key")
    from_me = record.get("fromMe", key.get("fromMe"))
    if from_me is False:  # a receipt of a message the contact sent: not one of ours
        return []
    jids = _chat_jids(key, record)
    recipient_id: str | None = None
    if jids[0] is not None:
        if _ignored_chat(jids[0]):
            return []
        recipient_id = _contact_ref(jids, None).external_id
    return [
        StatusUpdate(
            **common,
            provider_message_id=message_id,
            status=_status_name(raw_status),
            recipient_id=recipient_id,
            occurred_at=_iso(payload.get("date_time"), common["received_at"]),
        )
    ]


def _status_name(raw: Any) -> StatusName:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(_NUMERIC_STATUSES):
        raw = _NUMERIC_STATUSES[raw]
    name = _STATUSES.get(raw.upper()) if isinstance(raw, str) else None
    if name is None:
        raise UnsupportedPayload(
            f"Evolution webhook: unknown status {raw!r}", code="unknown_status"
        )
    return name

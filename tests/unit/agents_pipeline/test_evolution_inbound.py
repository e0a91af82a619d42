"""Evolution inbound: event spellings, keys, identity (lid / phone), content, garbage."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers import get_provider
from agents_pipeline.providers.base import WebhookItem
from streams.contracts import InboundMessage, ProviderName, StatusUpdate
from tests.unit.agents_pipeline.fixtures import (
    CHANNEL_ID,
    RECEIVED_AT,
    TRACE_ID,
    WORKSPACE_ID,
    assert_only_unsupported,
    fixture_names,
    load_fixture,
    make_headers,
    run,
)

EVO = get_provider(ProviderName.EVOLUTION)
PT_TEXT = (
    "Bom dia! Qual é o horário de funcionamento? Preciso de ajuda com a promoção 🙏 — obrigado"
)
PHONE_JID = "5511988887777@s.whatsapp.net"
LID_JID = "123456789012345@lid"

WEBHOOK_FIXTURES = [
    "evolution_connection_update.json",
    "evolution_messages_update.json",
    "evolution_upsert_image_truncated_base64.json",
    "evolution_upsert_text.json",
]
NOT_WEBHOOKS = [
    "evolution_error_500.json",
    "evolution_send_text_request.json",
    "evolution_send_text_response_docs.json",
    "evolution_webhook_set_request_v2.json",
]


def upsert(
    message: dict[str, Any] | None = None,
    *,
    event: str = "messages.upsert",
    msg_id: str = "3EB0AAAA",
    remote: str = PHONE_JID,
    from_me: bool = False,
    **key_extra: Any,
) -> dict[str, Any]:
    """A messages.upsert body with one record."""
    return {
        "event": event,
        "instance": "loja",
        "data": {
            "key": {"remoteJid": remote, "fromMe": from_me, "id": msg_id, **key_extra},
            "pushName": "Maria Conceição",
            "message": {"conversation": "oi"} if message is None else message,
            "messageType": "conversation",
            "messageTimestamp": 1746132673,
            "owner": "loja",
            "source": "android",
        },
        "destination": "https://example.test/hook",
        "date_time": "2025-05-01T17:51:14.031Z",
        "sender": "5511900000000@s.whatsapp.net",
        "server_url": "http://localhost:8080",
        "apikey": "SECRET-API-KEY",
    }


def update(status: Any = "DELIVERY_ACK", **data: Any) -> dict[str, Any]:
    """A messages.update body."""
    record = {
        "keyId": "3EB0BBBB",
        "remoteJid": PHONE_JID,
        "fromMe": True,
        "status": status,
        "instanceId": "uuid",
        "messageId": "cm-internal-id",
        **data,
    }
    return {
        "event": "messages.update",
        "instance": "loja",
        "data": record,
        "date_time": "2025-05-01T17:53:16.293Z",
        "apikey": None,
    }


def one(body: dict[str, Any]) -> InboundMessage:
    """The only event of a body, an InboundMessage."""
    events = run(EVO, body)
    assert len(events) == 1
    assert isinstance(events[0], InboundMessage)
    return events[0]


# --- the shared fixtures --------------------------------------------------------------------


def test_every_evolution_fixture_is_classified() -> None:
    assert sorted(WEBHOOK_FIXTURES + NOT_WEBHOOKS) == fixture_names("evolution_")


@pytest.mark.parametrize("name", NOT_WEBHOOKS)
def test_non_webhook_fixtures_are_unsupported(name: str) -> None:
    with pytest.raises(UnsupportedPayload):
        EVO.split(load_fixture(name))


def test_fixture_upsert_text() -> None:
    [item] = EVO.split(load_fixture("evolution_upsert_text.json"))
    assert item.key == "evo:msg:3EB03E3CA617ADA52AEA79"
    assert item.kind == "message"
    assert "apikey" not in item.payload
    [event] = EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION))
    assert isinstance(event, InboundMessage)
    assert event.event_key == item.key
    assert event.provider is ProviderName.EVOLUTION
    assert (event.trace_id, event.workspace_id, event.channel_id, event.received_at) == (
        TRACE_ID,
        WORKSPACE_ID,
        CHANNEL_ID,
        RECEIVED_AT,
    )
    assert event.provider_message_id == "3EB03E3CA617ADA52AEA79"
    assert event.type == "text"
    assert event.text == "hola - text"
    assert event.from_me is False
    assert event.contact.external_id == "59171146267"
    assert event.contact.phone == "59171146267"
    assert event.contact.alt_ids == []
    assert event.contact.name == "percy alvarez E1"
    assert event.sent_at == datetime.fromtimestamp(1746132673, UTC)


def test_fixture_upsert_image_drops_base64() -> None:
    body = load_fixture("evolution_upsert_image_truncated_base64.json")
    base64_data = body["data"]["message"]["base64"]
    [item] = EVO.split(body)
    assert item.key == "evo:msg:3EB083096BF5E4096E4137"
    assert "base64" not in item.payload["data"]["message"]
    assert "apikey" not in item.payload
    assert body["data"]["message"]["base64"] == base64_data  # the body itself is untouched
    [event] = EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION))
    assert isinstance(event, InboundMessage)
    assert event.type == "image"
    assert event.text == "hola - text con multimedia (imagen)"
    assert event.media is not None
    assert event.media.caption == "hola - text con multimedia (imagen)"
    assert event.media.mime_type == "image/jpeg"
    assert event.media.url is not None
    assert event.media.url.startswith("https://mmg.whatsapp.net/")
    assert event.media.sha256 == "hOGJCXvlENXj5fxZPPu8Ne6xHFM2S9WJPb/unywn5qE="
    dumped = event.model_dump_json()
    assert base64_data[:40] not in dumped
    assert "jpegThumbnail" not in dumped


def test_fixture_messages_update() -> None:
    [item] = EVO.split(load_fixture("evolution_messages_update.json"))
    assert item.key == "evo:st:3EB0E62EC94C6C01256AE4:READ"
    assert item.kind == "status"
    [event] = EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION))
    assert isinstance(event, StatusUpdate)
    assert event.provider_message_id == "3EB0E62EC94C6C01256AE4"
    assert event.status == "read"
    assert event.recipient_id == "5516996480805"  # ':90' device suffix stripped
    assert event.occurred_at == RECEIVED_AT  # no date_time in this body
    assert event.event_key == item.key


def test_fixture_connection_update_is_an_event_without_output() -> None:
    body = load_fixture("evolution_connection_update.json")
    [item] = EVO.split(body)
    assert item.kind == "event"
    assert item.key.startswith("evo:evt:h:") and len(item.key) == len("evo:evt:h:") + 64
    assert "apikey" not in item.payload
    assert EVO.split(copy.deepcopy(body))[0].key == item.key
    assert EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION)) == []


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_fixture_split_is_pure_and_repeatable(name: str) -> None:
    body = load_fixture(name)
    before = copy.deepcopy(body)
    first = EVO.split(body)
    assert body == before
    assert [i.key for i in EVO.split(copy.deepcopy(body))] == [i.key for i in first]
    for item in first:  # an item's payload is itself a body that splits into the same item
        assert EVO.split(item.payload) == [item]


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_fixture_fuzz_only_unsupported(name: str) -> None:
    assert_only_unsupported(EVO, load_fixture(name))


# --- event names and keys -------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["messages.upsert", "MESSAGES_UPSERT", "messages-upsert"])
def test_event_name_spellings_are_one_event(spelling: str) -> None:
    [item] = EVO.split(upsert({"conversation": "oi"}, event=spelling))
    assert item.key == "evo:msg:3EB0AAAA"
    assert item.payload["event"] == "messages.upsert"
    event = one(upsert({"conversation": "oi"}, event=spelling))
    assert (event.text, event.from_me) == ("oi", False)


@pytest.mark.parametrize("spelling", ["messages.update", "MESSAGES_UPDATE", "messages-update"])
def test_status_event_spellings(spelling: str) -> None:
    body = {**update("READ"), "event": spelling}
    [event] = run(EVO, body)
    assert isinstance(event, StatusUpdate)
    assert event.status == "read"


@pytest.mark.parametrize("spelling", ["send.message", "SEND_MESSAGE", "send-message"])
def test_send_message_event_is_from_me(spelling: str) -> None:
    event = one(upsert({"conversation": "Olá, aqui é a loja!"}, event=spelling))
    assert event.from_me is True
    assert event.contact.external_id == "5511988887777"
    assert event.contact.name is None  # pushName is the business's own name here


def test_same_message_in_two_bodies_has_the_same_key() -> None:
    first = upsert({"conversation": "oi"})
    second = upsert({"conversation": "oi"})
    second["date_time"] = "2025-05-01T18:00:00.000Z"
    second["event"] = "MESSAGES_UPSERT"
    assert [i.key for i in EVO.split(first)] == [i.key for i in EVO.split(second)]


def test_upsert_and_send_message_of_one_id_share_a_key() -> None:
    sent = EVO.split(upsert({"conversation": "oi"}, event="send.message"))
    echoed = EVO.split(upsert({"conversation": "oi"}, from_me=True))
    assert [i.key for i in sent] == [i.key for i in echoed] == ["evo:msg:3EB0AAAA"]


def test_data_as_a_list_gives_one_item_per_record() -> None:
    body = upsert({"conversation": "um"})
    second = copy.deepcopy(body["data"])
    second["key"]["id"] = "3EB0CCCC"
    second["message"] = {"conversation": "dois"}
    body["data"] = [body["data"], second]
    items = EVO.split(body)
    assert [i.key for i in items] == ["evo:msg:3EB0AAAA", "evo:msg:3EB0CCCC"]
    assert [e.text for e in run(EVO, body) if isinstance(e, InboundMessage)] == ["um", "dois"]


def test_status_keys_differ_by_status() -> None:
    assert EVO.split(update("SERVER_ACK"))[0].key == "evo:st:3EB0BBBB:SERVER_ACK"
    assert EVO.split(update("READ"))[0].key == "evo:st:3EB0BBBB:READ"


def test_other_events_are_hashed_event_items() -> None:
    body = {"event": "QRCODE_UPDATED", "instance": "loja", "data": {"qrcode": {"code": "2@x"}}}
    [item] = EVO.split(body)
    assert item.kind == "event"
    assert item.payload["event"] == "qrcode.updated"
    assert EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION)) == []


# --- identity -------------------------------------------------------------------------------


def test_lid_with_phone_alt_and_plain_phone_jid_give_the_same_external_id() -> None:
    by_phone = one(upsert({"conversation": "oi"}, remote=PHONE_JID))
    by_lid = one(upsert({"conversation": "oi"}, remote=LID_JID, remoteJidAlt=PHONE_JID))
    by_phone_with_lid = one(upsert({"conversation": "oi"}, remote=PHONE_JID, remoteJidAlt=LID_JID))
    assert by_phone.contact.external_id == by_lid.contact.external_id == "5511988887777"
    assert by_phone_with_lid.contact.external_id == "5511988887777"
    assert by_lid.contact.phone == by_phone.contact.phone == "5511988887777"
    assert by_lid.contact.alt_ids == by_phone_with_lid.contact.alt_ids == [LID_JID]
    assert by_phone.contact.alt_ids == []


def test_lid_with_sender_pn_of_older_builds() -> None:
    event = one(upsert({"conversation": "oi"}, remote=LID_JID, senderPn=PHONE_JID))
    assert event.contact.external_id == "5511988887777"
    assert event.contact.alt_ids == [LID_JID]


def test_lid_alone_is_the_external_id() -> None:
    event = one(upsert({"conversation": "oi"}, remote=LID_JID))
    assert event.contact.external_id == LID_JID
    assert event.contact.phone is None
    assert event.contact.alt_ids == []


def test_device_suffix_is_stripped() -> None:
    event = one(upsert({"conversation": "oi"}, remote="5511988887777:12@s.whatsapp.net"))
    assert event.contact.external_id == event.contact.phone == "5511988887777"


def test_junk_alternate_jid_is_ignored() -> None:
    event = one(upsert({"conversation": "oi"}, remoteJidAlt="not-a-jid"))
    assert event.contact.external_id == "5511988887777"


def test_from_me_message_is_stored_as_ours_for_the_remote_party() -> None:
    event = one(upsert({"conversation": "Pode deixar, já envio!"}, from_me=True))
    assert event.from_me is True
    assert event.contact.external_id == "5511988887777"
    assert event.contact.name is None


@pytest.mark.parametrize(
    "remote", ["120363025246125486@g.us", "status@broadcast", "120363170000000000@newsletter"]
)
def test_groups_broadcasts_and_channels_are_ignored(remote: str) -> None:
    body = upsert({"conversation": "oi"}, remote=remote, participant=PHONE_JID)
    assert len(EVO.split(body)) == 1
    assert run(EVO, body) == []
    assert run(EVO, update("READ", remoteJid=remote)) == []


# --- content --------------------------------------------------------------------------------


def test_portuguese_text_survives_untouched() -> None:
    event = one(upsert({"conversation": PT_TEXT}))
    assert event.text == PT_TEXT
    assert event.contact.name == "Maria Conceição"
    assert InboundMessage.model_validate_json(event.model_dump_json()).text == PT_TEXT


def test_extended_text_with_reply_context() -> None:
    message = {
        "extendedTextMessage": {
            "text": "Sim, quero o de chocolate",
            "contextInfo": {"stanzaId": "3EB0ORIGINAL", "participant": PHONE_JID},
        }
    }
    event = one(upsert(message))
    assert (event.type, event.text, event.context_message_id) == (
        "text",
        "Sim, quero o de chocolate",
        "3EB0ORIGINAL",
    )


def test_record_level_context_info() -> None:
    body = upsert({"conversation": "isso"})
    body["data"]["contextInfo"] = {"stanzaId": "3EB0QUOTED"}
    assert one(body).context_message_id == "3EB0QUOTED"


def test_voice_note() -> None:
    message = {
        "audioMessage": {"url": "https://mmg/x", "mimetype": "audio/ogg; codecs=opus", "ptt": True}
    }
    event = one(upsert(message))
    assert event.type == "audio"
    assert event.media is not None
    assert event.media.voice is True
    assert event.text is None


def test_audio_file_is_not_a_voice_note() -> None:
    event = one(upsert({"audioMessage": {"url": "https://mmg/x", "mimetype": "audio/mpeg"}}))
    assert event.media is not None
    assert event.media.voice is False


def test_document_with_caption_wrapper() -> None:
    message = {
        "documentWithCaptionMessage": {
            "message": {
                "documentMessage": {
                    "url": "https://mmg/doc",
                    "mimetype": "application/pdf",
                    "fileName": "orçamento.pdf",
                    "caption": "Segue o orçamento",
                }
            }
        }
    }
    event = one(upsert(message))
    assert event.type == "document"
    assert event.media is not None
    assert (event.media.filename, event.media.caption) == ("orçamento.pdf", "Segue o orçamento")
    assert event.text == "Segue o orçamento"


def test_s3_media_url_is_preferred() -> None:
    message = {
        "videoMessage": {"url": "https://mmg/enc", "mimetype": "video/mp4", "caption": "vídeo"},
        "mediaUrl": "https://bucket.example/video.mp4",
        "base64": "AAAA",
    }
    event = one(upsert(message))
    assert event.type == "video"
    assert event.media is not None
    assert event.media.url == "https://bucket.example/video.mp4"


def test_sticker_inside_ephemeral_wrapper() -> None:
    message = {"ephemeralMessage": {"message": {"stickerMessage": {"mimetype": "image/webp"}}}}
    event = one(upsert(message))
    assert event.type == "sticker"
    assert event.media is not None
    assert event.media.mime_type == "image/webp"


def test_location() -> None:
    message = {
        "locationMessage": {
            "degreesLatitude": -23.5505,
            "degreesLongitude": -46.6333,
            "name": "Praça da Sé",
            "address": "São Paulo - SP",
        }
    }
    event = one(upsert(message))
    assert event.type == "location"
    assert event.location is not None
    assert (event.location.latitude, event.location.longitude) == (-23.5505, -46.6333)
    assert (event.location.name, event.location.address) == ("Praça da Sé", "São Paulo - SP")


def test_contact_card_phones_from_vcard() -> None:
    vcard = (
        "BEGIN:VCARD\nVERSION:3.0\nN:;João;;;\nFN:João Padeiro\n"
        "item1.TEL;waid=5511977776666:+55 11 97777-6666\nitem1.X-ABLabel:Celular\n"
        "TEL;type=WORK:+55 11 3333-4444\nEND:VCARD"
    )
    event = one(upsert({"contactMessage": {"displayName": "João Padeiro", "vcard": vcard}}))
    assert event.type == "contacts"
    assert [(c.name, c.phones) for c in event.contacts] == [
        ("João Padeiro", ["5511977776666", "+55 11 3333-4444"])
    ]


def test_contacts_array() -> None:
    message = {
        "contactsArrayMessage": {
            "displayName": "2 contatos",
            "contacts": [
                {"displayName": "Ana", "vcard": "BEGIN:VCARD\nTEL;waid=551:+551\nEND:VCARD"},
                {"displayName": "Bruno"},
            ],
        }
    }
    event = one(upsert(message))
    assert [(c.name, c.phones) for c in event.contacts] == [("Ana", ["551"]), ("Bruno", [])]


def test_buttons_response() -> None:
    message = {"buttonsResponseMessage": {"selectedButtonId": "sim", "selectedDisplayText": "Sim"}}
    event = one(upsert(message))
    assert event.type == "interactive"
    assert event.reply is not None
    assert (event.reply.kind, event.reply.id, event.reply.title) == ("button_reply", "sim", "Sim")
    assert event.text == "Sim"


def test_list_response() -> None:
    message = {
        "listResponseMessage": {
            "title": "Pão francês",
            "description": "Saindo do forno",
            "singleSelectReply": {"selectedRowId": "row-1"},
        }
    }
    event = one(upsert(message))
    assert event.reply is not None
    assert (event.reply.kind, event.reply.id, event.reply.title, event.reply.description) == (
        "list_reply",
        "row-1",
        "Pão francês",
        "Saindo do forno",
    )


def test_template_button_reply() -> None:
    message = {"templateButtonReplyMessage": {"selectedId": "OPT", "selectedDisplayText": "Opção"}}
    event = one(upsert(message))
    assert event.type == "button"
    assert event.reply is not None
    assert (event.reply.kind, event.reply.id, event.reply.title) == (
        "template_button",
        "OPT",
        "Opção",
    )


def test_reaction() -> None:
    message = {
        "reactionMessage": {"key": {"remoteJid": PHONE_JID, "id": "3EB0TARGET"}, "text": "❤️"}
    }
    event = one(upsert(message))
    assert event.type == "reaction"
    assert event.reaction is not None
    assert (event.reaction.message_id, event.reaction.emoji) == ("3EB0TARGET", "❤️")


def test_unknown_content_is_unsupported_not_an_error() -> None:
    message = {"pollCreationMessage": {"name": "Qual sabor?"}, "messageContextInfo": {}}
    assert one(upsert(message)).type == "unsupported"


def test_missing_message_is_unsupported_type() -> None:
    body = upsert()
    del body["data"]["message"]
    assert one(body).type == "unsupported"


@pytest.mark.parametrize(
    "message",
    [
        {"protocolMessage": {"type": "REVOKE", "key": {"id": "x"}}},
        {"senderKeyDistributionMessage": {}, "messageContextInfo": {}},
        {"editedMessage": {"message": {"protocolMessage": {}}}},
    ],
)
def test_protocol_noise_gives_nothing(message: dict[str, Any]) -> None:
    assert run(EVO, upsert(message)) == []


@pytest.mark.parametrize(
    "timestamp",
    [1746132673, "1746132673", 1746132673000, {"low": 1746132673, "high": 0, "unsigned": True}],
)
def test_timestamp_shapes(timestamp: Any) -> None:
    body = upsert()
    body["data"]["messageTimestamp"] = timestamp
    assert one(body).sent_at == datetime.fromtimestamp(1746132673, UTC)


def test_missing_timestamp_falls_back_to_received_at() -> None:
    body = upsert()
    del body["data"]["messageTimestamp"]
    assert one(body).sent_at == RECEIVED_AT


# --- statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PENDING", "accepted"),
        ("SERVER_ACK", "sent"),
        ("DELIVERY_ACK", "delivered"),
        ("READ", "read"),
        ("PLAYED", "read"),
        ("ERROR", "failed"),
        ("DELETED", "deleted"),
        ("read", "read"),
        (3, "delivered"),
        (0, "failed"),
    ],
)
def test_status_mapping(raw: Any, expected: str) -> None:
    [event] = run(EVO, update(raw))
    assert isinstance(event, StatusUpdate)
    assert event.status == expected
    assert event.provider_message_id == "3EB0BBBB"
    assert event.recipient_id == "5511988887777"
    assert event.occurred_at == datetime(2025, 5, 1, 17, 53, 16, 293000, tzinfo=UTC)


def test_baileys_shaped_update() -> None:
    body = update()
    body["data"] = [
        {"key": {"remoteJid": LID_JID, "id": "3EB0DDDD", "fromMe": True}, "update": {"status": 4}}
    ]
    [item] = EVO.split(body)
    assert item.key == "evo:st:3EB0DDDD:4"
    [event] = EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION))
    assert isinstance(event, StatusUpdate)
    assert (event.status, event.recipient_id) == ("read", LID_JID)


def test_receipt_of_a_contact_message_is_ignored() -> None:
    assert run(EVO, update("READ", fromMe=False)) == []


def test_update_without_status_is_ignored() -> None:
    body = update()
    del body["data"]["status"]
    [item] = EVO.split(body)
    assert item.key.startswith("evo:st:h:")
    assert EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION)) == []


def test_unknown_status_is_unsupported() -> None:
    with pytest.raises(UnsupportedPayload):
        run(EVO, update("TELEPORTED"))


# --- garbage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "messages.upsert",
        {},
        {"data": {}},
        {"event": None, "data": {}},
        {"event": 42, "data": {}},
        {"event": "", "data": {}},
        {"event": "messages.upsert"},
        {"event": "messages.upsert", "data": "text"},
        {"event": "messages.upsert", "data": ["text"]},
        {"event": "messages.update", "data": 3},
    ],
)
def test_garbage_bodies_are_unsupported(body: Any) -> None:
    with pytest.raises(UnsupportedPayload):
        EVO.split(body)


def forged(data: Any, event: str = "messages.upsert") -> WebhookItem:
    """An item holding ``data``."""
    return WebhookItem(key="evo:msg:forged", kind="message", payload={"event": event, "data": data})


@pytest.mark.parametrize(
    "item",
    [
        WebhookItem(key="k", kind="message", payload={}),
        WebhookItem(key="k", kind="message", payload={"event": ["x"]}),
        forged(None),
        forged([]),
        forged({"message": {"conversation": "oi"}}),
        forged({"key": "3EB0"}),
        forged({"key": {"remoteJid": PHONE_JID}}),
        forged({"key": {"id": "3EB0"}}),
        forged({"key": {"id": "3EB0", "remoteJid": "5511988887777"}}),
        forged({"key": {"id": "3EB0", "remoteJid": "@s.whatsapp.net"}}),
        forged({"key": {"id": "3EB0", "remoteJid": "abc@s.whatsapp.net"}}),
        forged({"key": {"id": "3EB0", "remoteJid": "x@unknown.server"}}),
        forged({"key": {"id": "3EB0", "remoteJid": PHONE_JID}, "message": "oi"}),
        forged({"key": {"id": "3EB0", "remoteJid": PHONE_JID}, "messageTimestamp": "ontem"}),
        forged({"key": {"id": "3EB0", "remoteJid": PHONE_JID}, "messageTimestamp": 1e300}),
        forged({"key": {"id": "3EB0", "remoteJid": PHONE_JID}, "message": {"imageMessage": "x"}}),
        forged(
            {
                "key": {"id": "3EB0", "remoteJid": PHONE_JID},
                "message": {"extendedTextMessage": {"contextInfo": {}}},
            }
        ),
        forged(
            {
                "key": {"id": "3EB0", "remoteJid": PHONE_JID},
                "message": {"locationMessage": {"degreesLatitude": "-23"}},
            }
        ),
        forged(
            {
                "key": {"id": "3EB0", "remoteJid": PHONE_JID},
                "message": {"reactionMessage": {"text": "x"}},
            }
        ),
        forged({"status": "READ", "remoteJid": PHONE_JID}, event="messages.update"),
        forged({"keyId": "3EB0", "status": "READ", "remoteJid": 5511}, event="messages.update"),
        forged({"keyId": "3EB0", "status": ["READ"]}, event="messages.update"),
    ],
)
def test_forged_items_are_unsupported(item: WebhookItem) -> None:
    with pytest.raises(UnsupportedPayload):
        EVO.normalize(item, headers=make_headers(ProviderName.EVOLUTION))


def test_fuzz_own_payloads_only_unsupported() -> None:
    rich = upsert(
        {
            "extendedTextMessage": {"text": "oi", "contextInfo": {"stanzaId": "x"}},
            "locationMessage": {"degreesLatitude": 1.0, "degreesLongitude": 2.0},
            "reactionMessage": {"key": {"id": "y"}, "text": "👍"},
            "contactMessage": {"displayName": "A", "vcard": "TEL;waid=1:1"},
            "listResponseMessage": {"title": "t", "singleSelectReply": {"selectedRowId": "r"}},
            "ephemeralMessage": {"message": {"conversation": "z"}},
        },
        remote=LID_JID,
        remoteJidAlt=PHONE_JID,
    )
    assert_only_unsupported(EVO, rich)
    assert_only_unsupported(EVO, update("READ"))


def test_item_payloads_are_json_serialisable() -> None:
    for name in WEBHOOK_FIXTURES:
        for item in EVO.split(load_fixture(name)):
            assert json.loads(json.dumps(item.payload)) == item.payload

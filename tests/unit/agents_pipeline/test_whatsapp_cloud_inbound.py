"""WhatsApp Cloud inbound: split keys, reduced payloads, normalization, garbage."""

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

CLOUD = get_provider(ProviderName.WHATSAPP_CLOUD)
PT_TEXT = "Olá! Vocês têm pão de queijo? Ação válida até amanhã — ótimo 😋🇧🇷"

WEBHOOK_FIXTURES = [
    "cloud_audio_voice.json",
    "cloud_document.json",
    "cloud_image.json",
    "cloud_image_with_url.json",
    "cloud_interactive_button_reply.json",
    "cloud_location.json",
    "cloud_multi.json",
    "cloud_reaction.json",
    "cloud_status_delivered.json",
    "cloud_status_failed.json",
    "cloud_status_read.json",
    "cloud_status_sent.json",
    "cloud_text.json",
]
NOT_WEBHOOKS = [
    "cloud_error_130429.json",
    "cloud_mark_read_request.json",
    "cloud_mark_read_response.json",
    "cloud_send_response_accepted.json",
    "cloud_send_text_request.json",
    "cloud_send_text_response.json",
    "cloud_signature_vectors_computed.json",
    "cloud_verify_get.json",
]


# --- builders of our own payloads -----------------------------------------------------------


def post(*changes: dict[str, Any], entry_id: str = "WABA-1") -> dict[str, Any]:
    """A Cloud POST with one entry holding ``changes``."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": entry_id, "changes": list(changes)}],
    }


def change(field: str = "messages", **value: Any) -> dict[str, Any]:
    """One change of ``field`` whose value holds ``value`` besides product and metadata."""
    return {
        "field": field,
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "5511900000000", "phone_number_id": "PNID"},
            **value,
        },
    }


def contact(wa_id: str | None = None, name: str = "Maria", **extra: Any) -> dict[str, Any]:
    """A contacts[] element."""
    out: dict[str, Any] = {"profile": {"name": name}, **extra}
    if wa_id is not None:
        out["wa_id"] = wa_id
    return out


def text_msg(msg_id: str, sender: str | None = "5511988887777", body: str = "oi", **extra: Any):
    """A text messages[] element."""
    out: dict[str, Any] = {"id": msg_id, "timestamp": "1749416383", "type": "text"}
    out["text"] = {"body": body}
    if sender is not None:
        out["from"] = sender
    return {**out, **extra}


def status(status_id: str | None, name: str = "delivered", **extra: Any) -> dict[str, Any]:
    """A statuses[] element."""
    out: dict[str, Any] = {
        "status": name,
        "timestamp": "1750030073",
        "recipient_id": "5511988887777",
    }
    if status_id is not None:
        out["id"] = status_id
    return {**out, **extra}


def one_message(message: dict[str, Any], *contacts: dict[str, Any]) -> InboundMessage:
    """Normalize a POST holding one message and return its only event."""
    value: dict[str, Any] = {"messages": [message]}
    if contacts:
        value["contacts"] = list(contacts)
    events = run(CLOUD, post(change(**value)))
    assert len(events) == 1
    assert isinstance(events[0], InboundMessage)
    return events[0]


def one_status(element: dict[str, Any], *contacts: dict[str, Any]) -> StatusUpdate:
    """Normalize a POST holding one status and return its only event."""
    value: dict[str, Any] = {"statuses": [element]}
    if contacts:
        value["contacts"] = list(contacts)
    events = run(CLOUD, post(change(**value)))
    assert len(events) == 1
    assert isinstance(events[0], StatusUpdate)
    return events[0]


# --- the shared fixtures --------------------------------------------------------------------


def test_every_cloud_fixture_is_classified() -> None:
    assert sorted(WEBHOOK_FIXTURES + NOT_WEBHOOKS) == fixture_names("cloud_")


@pytest.mark.parametrize("name", NOT_WEBHOOKS)
def test_non_webhook_fixtures_are_unsupported(name: str) -> None:
    with pytest.raises(UnsupportedPayload):
        CLOUD.split(load_fixture(name))


def test_fixture_text() -> None:
    [item] = CLOUD.split(load_fixture("cloud_text.json"))
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert item.key == f"wa:msg:{wamid}"
    assert item.kind == "message"
    [event] = CLOUD.normalize(item, headers=make_headers(ProviderName.WHATSAPP_CLOUD))
    assert isinstance(event, InboundMessage)
    assert event.event_key == item.key
    assert event.provider is ProviderName.WHATSAPP_CLOUD
    assert (event.trace_id, event.workspace_id, event.channel_id) == (
        TRACE_ID,
        WORKSPACE_ID,
        CHANNEL_ID,
    )
    assert event.received_at == RECEIVED_AT
    assert event.provider_message_id == wamid
    assert event.type == "text"
    assert event.text == "Does it come in another color?"
    assert event.from_me is False
    assert event.contact.external_id == "16505551234"
    assert event.contact.phone == "16505551234"
    assert event.contact.alt_ids == []
    assert event.contact.name == "Sheena Nelson"
    assert event.sent_at == datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)
    assert event.sent_at.tzinfo is UTC
    assert event.context_message_id is None


def test_fixture_image() -> None:
    [event] = run(CLOUD, load_fixture("cloud_image.json"))
    assert isinstance(event, InboundMessage)
    assert event.type == "image"
    assert event.text is None
    assert event.media is not None
    assert event.media.id == "8472976218001204"
    assert event.media.mime_type == "image/jpeg"
    assert event.media.sha256 == "ciJuSxU7RLnnFz3cNcasdL7UQKt9e1yj/3u+Rhsabv0="
    assert event.media.voice is False
    assert event.contact.name == "Mauricio Binda"


def test_fixture_image_with_url_keeps_url_and_user_ids() -> None:
    [event] = run(CLOUD, load_fixture("cloud_image_with_url.json"))
    assert isinstance(event, InboundMessage)
    assert event.media is not None
    assert event.media.id == "65463453"
    assert event.media.url is not None
    assert event.media.url.startswith("https://lookaside.fbsbx.com/")
    assert event.contact.external_id == "972987654321"
    assert event.contact.phone == "972987654321"
    assert event.contact.alt_ids == ["US.13491208655302741918", "US.ENT.11815799212886844830"]


def test_fixture_audio_voice() -> None:
    [event] = run(CLOUD, load_fixture("cloud_audio_voice.json"))
    assert isinstance(event, InboundMessage)
    assert event.type == "audio"
    assert event.media is not None
    assert event.media.voice is True
    assert event.media.id == "827776106019109"
    assert event.media.mime_type == "audio/ogg; codecs=opus"
    assert event.sent_at == datetime.fromtimestamp(1673033070, UTC)


def test_fixture_document() -> None:
    [event] = run(CLOUD, load_fixture("cloud_document.json"))
    assert isinstance(event, InboundMessage)
    assert event.type == "document"
    assert event.media is not None
    assert event.media.filename == "4_641947.pdf"
    assert event.media.mime_type == "application/pdf"
    assert event.media.id == "848704520347750"


def test_fixture_location_forwarded_context_has_no_id() -> None:
    [event] = run(CLOUD, load_fixture("cloud_location.json"))
    assert isinstance(event, InboundMessage)
    assert event.type == "location"
    assert event.location is not None
    assert event.location.latitude == pytest.approx(37.4611978)
    assert event.location.longitude == pytest.approx(-122.2164385)
    assert event.location.name == "Facebook HQ"
    assert event.location.address == "1 Hacker Way, Menlo Park, CA 94025"
    assert event.location.url == "https://maps.google.com/?cid=2000000000000000000"
    assert event.context_message_id is None


def test_fixture_interactive_button_reply() -> None:
    [event] = run(CLOUD, load_fixture("cloud_interactive_button_reply.json"))
    assert isinstance(event, InboundMessage)
    assert event.type == "interactive"
    assert event.reply is not None
    assert (event.reply.kind, event.reply.id, event.reply.title) == (
        "button_reply",
        "callback_data",
        "title",
    )
    assert event.text == "title"
    assert event.context_message_id == "wamid.xyzxyz"


def test_fixture_reaction() -> None:
    [event] = run(CLOUD, load_fixture("cloud_reaction.json"))
    assert isinstance(event, InboundMessage)
    assert event.type == "reaction"
    assert event.reaction is not None
    assert event.reaction.emoji == "👍"
    assert event.reaction.message_id.startswith("wamid.nBgN6TUyN2k5")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cloud_status_sent.json", ("sent", "16505551234", 1750030073)),
        ("cloud_status_delivered.json", ("delivered", "1111111111111", 1673020317)),
        ("cloud_status_read.json", ("read", "1111111111111", 1673020317)),
    ],
)
def test_fixture_statuses(name: str, expected: tuple[str, str, int]) -> None:
    body = load_fixture(name)
    [item] = CLOUD.split(body)
    element = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert item.key == f"wa:st:{element['id']}:{expected[0]}"
    assert item.kind == "status"
    [event] = CLOUD.normalize(item, headers=make_headers(ProviderName.WHATSAPP_CLOUD))
    assert isinstance(event, StatusUpdate)
    assert event.provider_message_id == element["id"]
    assert (event.status, event.recipient_id) == expected[:2]
    assert event.occurred_at == datetime.fromtimestamp(expected[2], UTC)
    assert event.error_code is None
    assert event.event_key == item.key


def test_fixture_status_failed_carries_error() -> None:
    [event] = run(CLOUD, load_fixture("cloud_status_failed.json"))
    assert isinstance(event, StatusUpdate)
    assert event.status == "failed"
    assert event.error_code == "131049"
    assert event.error_title is not None
    assert event.error_title.startswith("This message was not delivered")
    assert event.recipient_id == "16505551234"


def test_fixture_multi_statuses_without_id_are_keyed_by_hash_and_ignored() -> None:
    items = CLOUD.split(load_fixture("cloud_multi.json"))
    assert len(items) == 3
    assert len({i.key for i in items}) == 3
    assert all(i.key.startswith("wa:st:h:") and len(i.key) == len("wa:st:h:") + 64 for i in items)
    assert all(i.kind == "status" for i in items)
    assert [i.payload["entry"][0]["changes"][0]["value"]["statuses"][0] for i in items] == [
        {"status": "sent"},
        {"status": "delivered"},
        {"status": "read"},
    ]
    headers = make_headers(ProviderName.WHATSAPP_CLOUD)
    assert all(CLOUD.normalize(i, headers=headers) == [] for i in items)


def test_signed_fixture_body_keeps_non_ascii_text() -> None:
    raw = load_fixture("cloud_signature_vectors_computed.json")[
        "A_raw_body_as_received_ascii_escaped"
    ]
    [event] = run(CLOUD, json.loads(raw))
    assert isinstance(event, InboundMessage)
    assert event.text == "Café — does it come in another color?"


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_fixture_split_is_pure_and_repeatable(name: str) -> None:
    body = load_fixture(name)
    before = copy.deepcopy(body)
    first = CLOUD.split(body)
    assert body == before
    assert [i.key for i in CLOUD.split(copy.deepcopy(body))] == [i.key for i in first]
    for item in first:  # a reduced payload is itself a POST that splits into the same item
        assert CLOUD.split(item.payload) == [item]


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_fixture_fuzz_only_unsupported(name: str) -> None:
    assert_only_unsupported(CLOUD, load_fixture(name))


# --- split ----------------------------------------------------------------------------------


def multi_post() -> dict[str, Any]:
    """3 messages (two senders in one change, one in another) and 2 statuses."""
    return post(
        change(
            contacts=[contact("5511911111111", "Ana"), contact("5521922222222", "João")],
            messages=[
                text_msg("wamid.A", "5511911111111", "primeira"),
                text_msg("wamid.B", "5521922222222", "segunda"),
            ],
        ),
        change(
            contacts=[contact("5531933333333", "Zé")],
            messages=[text_msg("wamid.C", "5531933333333")],
        ),
        change(statuses=[status("wamid.OUT1", "sent"), status("wamid.OUT2", "read")]),
    )


def test_multi_message_post_gives_five_items_with_distinct_keys() -> None:
    items = CLOUD.split(multi_post())
    assert [i.key for i in items] == [
        "wa:msg:wamid.A",
        "wa:msg:wamid.B",
        "wa:msg:wamid.C",
        "wa:st:wamid.OUT1:sent",
        "wa:st:wamid.OUT2:read",
    ]
    assert [i.kind for i in items] == ["message"] * 3 + ["status"] * 2
    events = run(CLOUD, multi_post())
    names = [e.contact.name for e in events if isinstance(e, InboundMessage)]
    assert names == ["Ana", "João", "Zé"]
    assert [e.status for e in events if isinstance(e, StatusUpdate)] == ["sent", "read"]


def test_reduced_payload_holds_only_the_item_and_its_contact() -> None:
    item = CLOUD.split(multi_post())[1]
    assert item.payload == {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA-1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511900000000",
                                "phone_number_id": "PNID",
                            },
                            "contacts": [contact("5521922222222", "João")],
                            "messages": [text_msg("wamid.B", "5521922222222", "segunda")],
                        },
                    }
                ],
            }
        ],
    }


def test_same_message_in_two_posts_has_the_same_key() -> None:
    first = post(change(contacts=[contact("5511911111111")], messages=[text_msg("wamid.SAME")]))
    second = post(
        change(messages=[text_msg("wamid.OTHER"), text_msg("wamid.SAME")]),
        change(statuses=[status("wamid.X")]),
        entry_id="WABA-2",
    )
    [key] = [i.key for i in CLOUD.split(first)]
    assert key == "wa:msg:wamid.SAME"
    assert key in [i.key for i in CLOUD.split(second)]


def test_status_keys_differ_by_status_and_repeat_by_status() -> None:
    keys = [i.key for i in CLOUD.split(post(change(statuses=[status("wamid.S", "sent")])))]
    again = [i.key for i in CLOUD.split(post(change(statuses=[status("wamid.S", "sent")])))]
    later = [i.key for i in CLOUD.split(post(change(statuses=[status("wamid.S", "read")])))]
    assert keys == again == ["wa:st:wamid.S:sent"]
    assert later == ["wa:st:wamid.S:read"]


def test_the_same_message_twice_in_one_post_is_one_item() -> None:
    body = post(change(messages=[text_msg("wamid.D")]), change(messages=[text_msg("wamid.D")]))
    assert [i.key for i in CLOUD.split(body)] == ["wa:msg:wamid.D"]


@pytest.mark.parametrize(
    "body",
    [
        post(),
        {"object": "whatsapp_business_account", "entry": []},
        post(change(field="account_update", event="VERIFIED_ACCOUNT")),
        post({"field": "messages"}),
        {"object": "whatsapp_business_account", "entry": [{"id": "1"}]},
    ],
)
def test_well_formed_body_without_items_gives_nothing(body: dict[str, Any]) -> None:
    assert CLOUD.split(body) == []


@pytest.mark.parametrize(
    "body",
    [
        None,
        "text",
        [],
        {},
        {"object": "page", "entry": []},
        {"entry": []},
        {"object": "whatsapp_business_account"},
        {"object": "whatsapp_business_account", "entry": "string"},
        {"object": "whatsapp_business_account", "entry": {"id": "1"}},
        {"object": "whatsapp_business_account", "entry": ["string"]},
        {"object": "whatsapp_business_account", "entry": [{"changes": {"value": {}}}]},
        post("change"),
        post({"field": "messages", "value": []}),
        post(change(messages={"id": "wamid.1"})),
        post(change(messages=["wamid.1"])),
        post(change(statuses="delivered")),
        post(change(errors={"code": 1})),
        post(change(contacts="Maria", messages=[text_msg("wamid.1")])),
        post(change(contacts=["Maria"], messages=[text_msg("wamid.1")])),
    ],
)
def test_garbage_bodies_are_unsupported(body: Any) -> None:
    with pytest.raises(UnsupportedPayload):
        CLOUD.split(body)


# --- identity -------------------------------------------------------------------------------


def test_username_user_without_phone_is_keyed_on_user_id() -> None:
    user = {"profile": {"name": "Bia", "username": "bia.doces"}, "user_id": "BR.1502576394655843"}
    message = text_msg("wamid.U", sender=None, from_user_id="BR.1502576394655843")
    event = one_message(message, user)
    assert event.contact.external_id == "BR.1502576394655843"
    assert event.contact.phone is None
    assert event.contact.alt_ids == []
    assert event.contact.name == "Bia"


def test_user_id_only_in_contacts_still_names_the_sender() -> None:
    user = {"profile": {"name": "Bia"}, "user_id": "BR.77", "parent_user_id": "BR.ENT.99"}
    event = one_message(text_msg("wamid.U2", sender=None), user)
    assert event.contact.external_id == "BR.77"
    assert event.contact.alt_ids == ["BR.ENT.99"]
    assert event.contact.phone is None


def test_phone_and_user_id_key_on_phone_with_user_id_as_alt() -> None:
    event = one_message(
        text_msg("wamid.P", from_user_id="BR.77"), contact("5511988887777", user_id="BR.77")
    )
    assert event.contact.external_id == "5511988887777"
    assert event.contact.phone == "5511988887777"
    assert event.contact.alt_ids == ["BR.77"]


def test_message_naming_no_user_is_unsupported() -> None:
    with pytest.raises(UnsupportedPayload):
        run(CLOUD, post(change(messages=[text_msg("wamid.N", sender=None)])))


def test_status_to_username_user_has_user_id_as_recipient() -> None:
    element = status("wamid.S", "delivered", recipient_user_id="BR.77")
    del element["recipient_id"]
    event = one_status(element)
    assert event.recipient_id == "BR.77"


def test_status_without_recipient_has_none() -> None:
    element = status("wamid.S", "sent")
    del element["recipient_id"]
    assert one_status(element).recipient_id is None


# --- message types --------------------------------------------------------------------------


def test_portuguese_text_survives_untouched() -> None:
    event = one_message(
        text_msg("wamid.PT", body=PT_TEXT), contact("5511988887777", "José Antônio")
    )
    assert event.text == PT_TEXT
    assert event.contact.name == "José Antônio"
    assert event.model_validate_json(event.model_dump_json()).text == PT_TEXT


def test_reply_context_id() -> None:
    message = text_msg("wamid.R", context={"from": "PNID", "id": "wamid.ORIGINAL"})
    assert one_message(message).context_message_id == "wamid.ORIGINAL"


def test_video_with_portuguese_caption() -> None:
    message = {
        "from": "5511988887777",
        "id": "wamid.V",
        "timestamp": 1749416383,
        "type": "video",
        "video": {"id": "M1", "mime_type": "video/mp4", "caption": PT_TEXT, "sha256": "abc="},
    }
    event = one_message(message)
    assert event.type == "video"
    assert event.text == PT_TEXT
    assert event.media is not None
    assert event.media.caption == PT_TEXT
    assert event.sent_at == datetime.fromtimestamp(1749416383, UTC)


def test_sticker() -> None:
    message = {"from": "551", "id": "wamid.ST", "timestamp": "1", "type": "sticker"}
    message["sticker"] = {"id": "M2", "mime_type": "image/webp", "animated": False}
    event = one_message(message)
    assert event.type == "sticker"
    assert event.media is not None
    assert event.media.id == "M2"


def test_list_reply() -> None:
    message = {"from": "551", "id": "wamid.L", "timestamp": "1", "type": "interactive"}
    message["interactive"] = {
        "type": "list_reply",
        "list_reply": {"id": "row-2", "title": "Entrega", "description": "Até 2 dias úteis"},
    }
    event = one_message(message)
    assert event.type == "interactive"
    assert event.reply is not None
    assert (event.reply.kind, event.reply.id, event.reply.title, event.reply.description) == (
        "list_reply",
        "row-2",
        "Entrega",
        "Até 2 dias úteis",
    )
    assert event.text == "Entrega"


def test_template_quick_reply_button() -> None:
    message = {"from": "551", "id": "wamid.B", "timestamp": "1", "type": "button"}
    message["button"] = {"payload": "QUERO_SABER", "text": "Quero saber mais"}
    message["context"] = {"from": "PNID", "id": "wamid.TEMPLATE"}
    event = one_message(message)
    assert event.type == "button"
    assert event.reply is not None
    assert (event.reply.kind, event.reply.id, event.reply.title) == (
        "template_button",
        "QUERO_SABER",
        "Quero saber mais",
    )
    assert event.text == "Quero saber mais"
    assert event.context_message_id == "wamid.TEMPLATE"


def test_contacts_message() -> None:
    message = {"from": "551", "id": "wamid.C", "timestamp": "1", "type": "contacts"}
    message["contacts"] = [
        {
            "name": {"formatted_name": "João da Silva", "first_name": "João"},
            "phones": [
                {"phone": "+55 11 98888-7777", "wa_id": "5511988887777", "type": "CELL"},
                {"phone": "+55 11 3333-4444", "type": "WORK"},
            ],
        },
        {"name": {"first_name": "Ana", "last_name": "Souza"}},
    ]
    event = one_message(message)
    assert event.type == "contacts"
    assert [(c.name, c.phones) for c in event.contacts] == [
        ("João da Silva", ["5511988887777", "+55 11 3333-4444"]),
        ("Ana Souza", []),
    ]


def test_reaction_removed_has_no_emoji() -> None:
    message = {"from": "551", "id": "wamid.RR", "timestamp": "1", "type": "reaction"}
    message["reaction"] = {"message_id": "wamid.TARGET", "emoji": ""}
    event = one_message(message)
    assert event.reaction is not None
    assert (event.reaction.message_id, event.reaction.emoji) == ("wamid.TARGET", None)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown"}]},
        {"type": "order", "order": {"catalog_id": "1", "product_items": []}},
        {
            "type": "system",
            "system": {"body": "User changed number", "type": "user_changed_number"},
        },
        {"type": "request_welcome"},
        {
            "type": "interactive",
            "interactive": {"type": "nfm_reply", "nfm_reply": {"body": "Sent"}},
        },
        {"type": "brand_new_type", "brand_new_type": {"x": 1}},
        {"type": ["not", "a", "string"]},
    ],
)
def test_unsupported_types_are_kept_not_errors(message: dict[str, Any]) -> None:
    event = one_message({"from": "551", "id": "wamid.X", "timestamp": "1", **message})
    assert event.type == "unsupported"
    assert event.provider_message_id == "wamid.X"


def test_system_message_keeps_its_body() -> None:
    message = {"from": "551", "id": "wamid.SY", "timestamp": "1", "type": "system"}
    message["system"] = {"body": "Usuário mudou de número"}
    assert one_message(message).text == "Usuário mudou de número"


def test_missing_timestamp_falls_back_to_received_at() -> None:
    message = text_msg("wamid.T")
    del message["timestamp"]
    assert one_message(message).sent_at == RECEIVED_AT


def test_group_messages_are_ignored() -> None:
    body = post(change(messages=[text_msg("wamid.G", group_id="120363025246125486")]))
    assert [i.key for i in CLOUD.split(body)] == ["wa:msg:wamid.G"]
    assert run(CLOUD, body) == []


# --- echoes, errors, statuses ---------------------------------------------------------------


def test_smb_message_echo_is_from_me_to_the_customer() -> None:
    echo = {
        "from": "5511900000000",
        "to": "5511988887777",
        "id": "wamid.ECHO",
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": "Já separei seu pedido, José!"},
    }
    body = post(change(field="smb_message_echoes", message_echoes=[echo]))
    [item] = CLOUD.split(body)
    assert item.key == "wa:echo:wamid.ECHO"
    assert item.kind == "message"
    [event] = CLOUD.normalize(item, headers=make_headers(ProviderName.WHATSAPP_CLOUD))
    assert isinstance(event, InboundMessage)
    assert event.from_me is True
    assert event.contact.external_id == "5511988887777"
    assert event.contact.phone == "5511988887777"
    assert event.text == "Já separei seu pedido, José!"


def test_errors_item_is_keyed_by_hash_and_unsupported_with_its_code() -> None:
    error = {
        "code": 131000,
        "title": "Something went wrong",
        "message": "Something went wrong",
        "error_data": {"details": "Unknown"},
    }
    [item] = CLOUD.split(post(change(errors=[error])))
    assert item.kind == "event"
    assert item.key.startswith("wa:err:h:")
    assert CLOUD.split(post(change(errors=[error])))[0].key == item.key
    with pytest.raises(UnsupportedPayload) as info:
        CLOUD.normalize(item, headers=make_headers(ProviderName.WHATSAPP_CLOUD))
    assert info.value.code == "131000"
    assert "Something went wrong" in info.value.message


@pytest.mark.parametrize(
    ("raw", "expected"), [("deleted", "deleted"), ("played", "read"), ("accepted", "accepted")]
)
def test_other_status_names(raw: str, expected: str) -> None:
    assert one_status(status("wamid.S", raw)).status == expected


def test_unknown_status_is_unsupported() -> None:
    with pytest.raises(UnsupportedPayload):
        run(CLOUD, post(change(statuses=[status("wamid.S", "teleported")])))


def test_status_recipient_name_is_not_the_contact_name() -> None:
    event = one_status(status("wamid.S"), contact("5511988887777", "Maria"))
    assert event.recipient_id == "5511988887777"


# --- normalize of forged items --------------------------------------------------------------


def forged(value: dict[str, Any]) -> WebhookItem:
    """An item whose reduced payload holds ``value``."""
    return WebhookItem(key="wa:msg:forged", kind="message", payload=post(change(**value)))


@pytest.mark.parametrize(
    "item",
    [
        WebhookItem(key="k", kind="message", payload={}),
        WebhookItem(key="k", kind="message", payload={"entry": "string"}),
        WebhookItem(key="k", kind="message", payload={"entry": []}),
        WebhookItem(key="k", kind="message", payload=post()),
        WebhookItem(key="k", kind="message", payload=post(change(), change())),
        forged({}),
        forged({"messages": {"id": "wamid.1"}}),
        forged({"messages": [text_msg("a"), text_msg("b")]}),
        forged({"messages": ["wamid.1"]}),
        forged({"messages": [text_msg("wamid.1", id=None)]}),
        forged({"messages": [{**text_msg("wamid.1"), "text": "oi"}]}),
        forged({"messages": [{**text_msg("wamid.1"), "text": {"body": 42}}]}),
        forged({"messages": [{**text_msg("wamid.1"), "timestamp": "yesterday"}]}),
        forged({"messages": [{**text_msg("wamid.1"), "timestamp": 10**20}]}),
        forged({"messages": [{**text_msg("wamid.1"), "timestamp": True}]}),
        forged(
            {"messages": [{"from": "1", "id": "w", "type": "image", "image": {"caption": "x"}}]}
        ),
        forged({"messages": [{"from": "1", "id": "w", "type": "image", "image": "M1"}]}),
        forged(
            {
                "messages": [
                    {"from": "1", "id": "w", "type": "location", "location": {"latitude": "1"}}
                ]
            }
        ),
        forged(
            {"messages": [{"from": "1", "id": "w", "type": "reaction", "reaction": {"emoji": "x"}}]}
        ),
        forged({"messages": [{"from": "1", "id": "w", "type": "contacts", "contacts": {}}]}),
        forged({"messages": [{"from": "1", "id": "w", "type": "interactive", "interactive": []}]}),
        forged(
            {
                "messages": [
                    {
                        "from": "1",
                        "id": "w",
                        "type": "interactive",
                        "interactive": {"type": "list_reply"},
                    }
                ]
            }
        ),
        forged({"statuses": [{"id": "wamid.1"}]}),
        forged({"statuses": [{"id": "wamid.1", "status": 3}]}),
        forged({"errors": [{"code": 1}]}),
    ],
)
def test_forged_items_are_unsupported(item: WebhookItem) -> None:
    with pytest.raises(UnsupportedPayload):
        CLOUD.normalize(item, headers=make_headers(ProviderName.WHATSAPP_CLOUD))


def test_fuzz_own_multi_post_only_unsupported() -> None:
    body = multi_post()
    body["entry"][0]["changes"].append(
        change(field="smb_message_echoes", message_echoes=[{**text_msg("wamid.E"), "to": "551"}])
    )
    body["entry"][0]["changes"].append(change(errors=[{"code": 1, "title": "x"}]))
    assert_only_unsupported(CLOUD, body)

"""Provider registry: one shared instance per provider, looked up by name."""

from __future__ import annotations

import sys
import types
from typing import Any

import aiohttp
import pytest

from agents_pipeline.providers import PROVIDERS, get_provider
from agents_pipeline.providers.base import Provider, SendResult
from agents_pipeline.providers.configs import EvolutionConfig, SandboxConfig, WhatsAppCloudConfig
from agents_pipeline.providers.evolution import EvolutionProvider
from agents_pipeline.providers.sandbox import SandboxProvider
from agents_pipeline.providers.whatsapp_cloud import WhatsAppCloudProvider
from streams.contracts import ProviderName

CLOUD_CONFIG = WhatsAppCloudConfig(
    phone_number_id="PNID", access_token="token", app_secret="secret", verify_token="verify"
)
EVOLUTION_CONFIG = EvolutionConfig(
    base_url="http://evolution.test", instance="loja", api_key="key", webhook_token="hook"
)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        (ProviderName.WHATSAPP_CLOUD, WhatsAppCloudProvider),
        (ProviderName.EVOLUTION, EvolutionProvider),
        (ProviderName.SANDBOX, SandboxProvider),
    ],
)
def test_get_provider_by_enum_or_string_is_one_shared_instance(
    name: ProviderName, cls: type
) -> None:
    provider = get_provider(name)
    assert isinstance(provider, cls)
    assert isinstance(provider, Provider)
    assert provider.name is name
    assert get_provider(name.value) is provider
    assert PROVIDERS[name] is provider


def test_every_provider_name_has_a_provider() -> None:
    assert set(PROVIDERS) == set(ProviderName)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        PROVIDERS[ProviderName.SANDBOX] = SandboxProvider()  # type: ignore[index]


@pytest.mark.parametrize("name", ["telegram", "", "WHATSAPP_CLOUD"])
def test_unknown_provider_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        get_provider(name)


@pytest.mark.parametrize(
    ("name", "module", "config"),
    [
        (
            ProviderName.WHATSAPP_CLOUD,
            "agents_pipeline.providers.whatsapp_cloud.outbound",
            CLOUD_CONFIG,
        ),
        (ProviderName.EVOLUTION, "agents_pipeline.providers.evolution.outbound", EVOLUTION_CONFIG),
    ],
)
async def test_send_text_delegates_to_outbound(
    monkeypatch: pytest.MonkeyPatch, name: ProviderName, module: str, config: Any
) -> None:
    calls: list[dict[str, Any]] = []

    async def fake_send_text(
        session: Any, cfg: Any, *, to: str, text: str, timeout: float
    ) -> SendResult:
        calls.append(
            {"session": session, "config": cfg, "to": to, "text": text, "timeout": timeout}
        )
        return SendResult(provider_message_id="pm-1")

    fake = types.ModuleType(module)
    fake.send_text = fake_send_text  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    async with aiohttp.ClientSession() as session:
        result = await get_provider(name).send_text(
            session, config, to="5511988887777", text="Olá, José!", timeout=3.5
        )
    assert result == SendResult(provider_message_id="pm-1")
    assert calls == [
        {
            "session": session,
            "config": config,
            "to": "5511988887777",
            "text": "Olá, José!",
            "timeout": 3.5,
        }
    ]


@pytest.mark.parametrize(
    ("name", "config"),
    [(ProviderName.WHATSAPP_CLOUD, EVOLUTION_CONFIG), (ProviderName.EVOLUTION, SandboxConfig())],
)
async def test_send_text_refuses_another_providers_config(name: ProviderName, config: Any) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TypeError):
            await get_provider(name).send_text(session, config, to="1", text="oi")

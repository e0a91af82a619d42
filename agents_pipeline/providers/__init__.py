"""Provider registry: the one shared, stateless instance of each provider, by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from agents_pipeline.providers.base import Provider
from agents_pipeline.providers.evolution import EvolutionProvider
from agents_pipeline.providers.sandbox import SandboxProvider
from agents_pipeline.providers.whatsapp_cloud import WhatsAppCloudProvider
from streams.contracts import ProviderName

PROVIDERS: Mapping[ProviderName, Provider] = MappingProxyType(
    {
        provider.name: provider
        for provider in (WhatsAppCloudProvider(), EvolutionProvider(), SandboxProvider())
    }
)


def get_provider(name: ProviderName | str) -> Provider:
    """The provider a channel names (raises ValueError for a name no provider has)."""
    try:
        return PROVIDERS[ProviderName(name)]
    except ValueError:
        raise ValueError(f"unknown provider {name!r}") from None


__all__ = ["PROVIDERS", "Provider", "get_provider"]

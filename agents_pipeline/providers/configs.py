"""Channel configuration per provider, validated on create and update.

Fields listed in ``SECRET_FIELDS`` are encrypted at rest, masked in API
answers and never written to a topic or a log line.
"""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from streams.contracts import ProviderName

DEFAULT_GRAPH_API_VERSION = "v23.0"
DEFAULT_GRAPH_BASE_URL = "https://graph.facebook.com"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhatsAppCloudConfig(_Config):
    """WhatsApp Cloud API (Meta) channel."""

    phone_number_id: str = Field(min_length=1, max_length=64)
    access_token: SecretStr
    app_secret: SecretStr
    verify_token: SecretStr
    waba_id: str | None = None
    api_version: str = Field(default=DEFAULT_GRAPH_API_VERSION, pattern=r"^v\d+\.\d+$")
    base_url: AnyHttpUrl = AnyHttpUrl(DEFAULT_GRAPH_BASE_URL)


class EvolutionConfig(_Config):
    """Evolution API gateway channel."""

    base_url: AnyHttpUrl
    instance: str = Field(min_length=1, max_length=128)
    api_key: SecretStr
    webhook_token: SecretStr


class SandboxConfig(_Config):
    """Sandbox channel: messages go nowhere but the database."""


CONFIG_MODELS: dict[ProviderName, type[_Config]] = {
    ProviderName.WHATSAPP_CLOUD: WhatsAppCloudConfig,
    ProviderName.EVOLUTION: EvolutionConfig,
    ProviderName.SANDBOX: SandboxConfig,
}

SECRET_FIELDS: dict[ProviderName, frozenset[str]] = {
    name: frozenset(
        field for field, info in model.model_fields.items() if info.annotation is SecretStr
    )
    for name, model in CONFIG_MODELS.items()
}


# The config fields that decide where provider calls go, and the credentials those calls
# carry: changing a destination needs those credentials in the same request, so that an
# API key cannot send a channel's stored token to a server of its choosing.
DESTINATION_FIELDS: dict[ProviderName, frozenset[str]] = {
    ProviderName.WHATSAPP_CLOUD: frozenset({"base_url"}),
    ProviderName.EVOLUTION: frozenset({"base_url"}),
    ProviderName.SANDBOX: frozenset(),
}
OUTBOUND_SECRETS: dict[ProviderName, frozenset[str]] = {
    ProviderName.WHATSAPP_CLOUD: frozenset({"access_token"}),
    ProviderName.EVOLUTION: frozenset({"api_key"}),
    ProviderName.SANDBOX: frozenset(),
}


def parse_config(provider: ProviderName, data: dict) -> _Config:
    """Validate a channel's config for its provider (raises pydantic.ValidationError)."""
    return CONFIG_MODELS[provider].model_validate(data)


def config_to_plain(config: BaseModel) -> dict:
    """The config as plain JSON values, secrets revealed (for encryption at rest only)."""
    out = {}
    for name, value in config:
        if isinstance(value, SecretStr):
            out[name] = value.get_secret_value()
        elif value is not None:
            out[name] = str(value) if isinstance(value, AnyHttpUrl) else value
    return out

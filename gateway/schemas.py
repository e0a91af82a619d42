"""Request bodies of the REST API (pydantic, unknown fields refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from streams.contracts import ProviderName


class Body(BaseModel):
    """Base of every request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


Name = Field(min_length=1, max_length=200)


class WorkspaceCreate(Body):
    """POST /api/v1/tenants/workspaces."""

    name: str = Name
    plan: str = Field(default="free", min_length=1, max_length=50)


class WorkspacePatch(Body):
    """PATCH /api/v1/tenants/workspaces/{id}."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    is_active: bool | None = None
    plan: str | None = Field(default=None, min_length=1, max_length=50)
    fallback_text: str | None = Field(default=None, max_length=4000)


class QuotaOverrides(Body):
    """PUT /api/v1/tenants/workspaces/{id}/quotas: per-metric monthly limits over the plan's.

    A metric left out keeps its current limit; ``null`` means unlimited.
    """

    inbound_messages: int | None = Field(default=None, ge=0)
    llm_tokens: int | None = Field(default=None, ge=0)


Role = Literal["owner", "admin", "member"]


class MemberCreate(Body):
    """POST /api/v1/tenants/members."""

    email: EmailStr
    role: Role


class MemberPatch(Body):
    """PATCH /api/v1/tenants/members/{id}."""

    role: Role


class KeyCreate(Body):
    """POST /api/v1/auth/keys."""

    name: str = Name
    scopes: list[Literal["admin", "read"]] = Field(min_length=1, max_length=2)
    expires_at: datetime | None = None


class ChannelCreate(Body):
    """POST /api/v1/channels/."""

    name: str = Name
    provider: ProviderName
    config: dict[str, Any] = Field(default_factory=dict)
    agent_id: UUID | None = None


class ChannelPatch(Body):
    """PATCH /api/v1/channels/{id}: config fields given replace those stored."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None
    agent_id: UUID | None = None
    is_active: bool | None = None


class InboxWebhook(Body):
    """POST /api/v1/webhooks/inbox/: a provider payload relayed by an integrator."""

    channel_id: UUID
    provider: ProviderName | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    payload: dict[str, Any]


class SandboxWebhook(Body):
    """POST /api/v1/webhooks/sandbox/{channel_id}: a message from a test contact."""

    from_: str = Field(alias="from", min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    text: str = Field(min_length=1, max_length=4096)
    message_id: str | None = Field(default=None, min_length=1, max_length=200)


class AgentCreate(Body):
    """POST /api/v1/agents/."""

    name: str = Name
    description: str | None = Field(default=None, max_length=2000)


class AgentPatch(Body):
    """PATCH /api/v1/agents/{id}: a null description clears it; a null name is refused."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


class VersionCreate(Body):
    """POST /api/v1/agents/{id}/versions: fields left out (or null) take the defaults."""

    system_prompt: str = Field(min_length=1, max_length=20000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=16384)
    knowledge_base_ids: list[UUID] = Field(default_factory=list, max_length=50)
    history_tokens: int | None = Field(default=None, ge=0, le=100000)
    fallback_text: str | None = Field(default=None, max_length=4000)


class VersionPatch(Body):
    """PATCH /api/v1/agents/{id}/versions/{version_id}: null clears model and fallback_text."""

    system_prompt: str | None = Field(default=None, min_length=1, max_length=20000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=16384)
    knowledge_base_ids: list[UUID] | None = Field(default=None, max_length=50)
    history_tokens: int | None = Field(default=None, ge=0, le=100000)
    fallback_text: str | None = Field(default=None, max_length=4000)


class ConversationPatch(Body):
    """PATCH /api/v1/conversations/{id}."""

    mode: Literal["bot", "human"] | None = None
    status: Literal["open", "closed"] | None = None
    needs_attention: Literal[False] | None = Field(
        default=None, description="false: a person took care of it (only the pipeline sets it)."
    )


class MessageCreate(Body):
    """POST /api/v1/conversations/{id}/messages: a human's reply."""

    text: str = Field(min_length=1, max_length=4096)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        """A provider refuses a blank text; say so now rather than fail in the send stage."""
        if not value.strip():
            raise ValueError("text must not be blank")
        return value

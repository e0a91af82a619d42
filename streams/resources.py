"""What the stream agents share in one worker: the database pool, an HTTP session, the LLM,
and the Redis connection the admin views read the auth epoch over.

Opened once, lazily, by the first agent that needs them; closed by the app on stop.
"""

from __future__ import annotations

import asyncio

import aiohttp
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.llm import LLMClient
from agents_pipeline.providers.egress import provider_session
from gateway.resp import RespClient
from omnichat.settings import Settings
from storage.db import open_pool
from storage.secrets import SecretBox
from streams.metrics import StreamMetrics


class Resources:
    """A worker's shared clients."""

    def __init__(self, settings: Settings, metrics: StreamMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._lock = asyncio.Lock()
        self._pool: AsyncConnectionPool | None = None
        self._http: aiohttp.ClientSession | None = None
        self.llm: LLMClient | None = None
        self.box = SecretBox(settings.fernet_keys) if settings.fernet_keys else None
        # Connects on first use; unset (no Redis), the views trust cached keys only briefly.
        self.redis = RespClient(settings.redis_url) if settings.redis_url else None

    async def pool(self) -> AsyncConnectionPool:
        """The database pool (opened on first use)."""
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    assert self.settings.database_url, "database_url is required"
                    self._pool = await open_pool(
                        self.settings.database_url,
                        min_size=self.settings.database_pool_min,
                        max_size=self.settings.database_pool_max,
                    )
        return self._pool

    async def http(self) -> aiohttp.ClientSession:
        """The HTTP session providers' sends use: it connects only to public addresses
        unless ``allow_private_provider_urls`` (``agents_pipeline/providers/egress.py``)."""
        if self._http is None:
            self._http = provider_session(allow_private=self.settings.allow_private_provider_urls)
        if self.llm is None and self.settings.llm_configured:
            key = self.settings.llm_api_key
            self.llm = LLMClient(
                base_url=self.settings.llm_base_url,
                api_key=key.get_secret_value() if key else None,
                timeout=self.settings.llm_timeout_seconds,
                max_retries=self.settings.llm_max_retries,
            )
        return self._http

    async def close(self) -> None:
        """Close everything (safe to call twice)."""
        if self.redis is not None:
            await self.redis.close()
        if self.llm is not None:
            await self.llm.close()
            self.llm = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

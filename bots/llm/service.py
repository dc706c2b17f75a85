"""The worker's LLM client, opened only when `openai` is configured (importing the
openai package costs most of a second, so echo-only workers never do)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from config.sections.services import OpenAISection

if TYPE_CHECKING:
    from bots.llm.client import LLMClient


def llm_configured(section: OpenAISection) -> bool:
    return section.base_url is not None or section.api_key is not None


@asynccontextmanager
async def open_llm(section: OpenAISection) -> AsyncIterator[LLMClient | None]:
    """Runs in the worker's loop: one client (one connection pool, one breaker) per worker."""
    if not llm_configured(section):
        yield None
        return
    from bots.llm.client import LLMClient

    client = LLMClient.from_settings(section)
    try:
        yield client
    finally:
        await client.aclose()

"""Conversation context: per-bot LRU in the worker -> Redis (namespaced TTLs) -> PostgreSQL."""

from context.handoff import HANDOFF_KEY, handed_off, handoff_changes, release_chat
from context.model import Changes, Context, Message
from context.service import open_context_store
from context.stats import ContextStatistics, StoreConfig
from context.store import ContextStore, ContextUnavailable

__all__ = [
    "HANDOFF_KEY",
    "Changes",
    "Context",
    "ContextStatistics",
    "ContextStore",
    "ContextUnavailable",
    "Message",
    "StoreConfig",
    "handed_off",
    "handoff_changes",
    "open_context_store",
    "release_chat",
]

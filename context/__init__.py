"""Conversation context: in-actor LRU -> Redis (namespaced TTLs) -> PostgreSQL history."""

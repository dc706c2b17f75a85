"""The sections of the settings: one pydantic model per `[section]` of the TOML file.

Every key is declared once, with its type, default and prose, in the module of its group:
services.py (Redis, PostgreSQL, Telegram, OpenAI), runtime.py (workers, bots, shutdown,
handlers, state, host, leases), messaging.py (rate limits, context, webhook, chats,
broadcasts), security.py (keys, logins, quotas, audit), operations.py (HTTP, dashboard,
metrics, log). config/settings.py composes them into `Settings`.
"""

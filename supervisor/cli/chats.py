"""`botvisor chats release BOT CHAT`: end an operator handoff from the command line."""

from __future__ import annotations

import argparse

from config import Settings
from context import open_context_store, release_chat
from supervisor.registry.audit import open_audit
from supervisor.registry.owners import ADMIN
from supervisor.services import open_registry, open_services


async def chats_command(settings: Settings, args: argparse.Namespace) -> int:
    match args.chats_command:
        case "release":
            # open_registry applies pending migrations, so the messages table exists
            async with open_services(settings) as live, open_registry(live) as registry:
                async with open_context_store(live) as store:
                    was = await release_chat(store, args.bot, args.chat)
                async with open_audit(registry.pool, live.database.timeout_s) as audit:
                    audit.record(
                        ADMIN,
                        "chat.release",
                        f"bot:{args.bot}/chat:{args.chat}",
                        source="cli",
                        outcome="ok" if was else "not_handed_off",
                    )
            state = "released" if was else "was not handed off; nothing to release"
            print(f"bot {args.bot} chat {args.chat}: {state}", flush=True)
            return 0
    raise AssertionError(args.chats_command)

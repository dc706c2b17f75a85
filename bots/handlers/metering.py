"""Quotas as handlers see them, through the worker's `UsageGate` (bots/handlers/base.py;
bots never import supervisor).

A worker implements `UsageGate` (supervisor/worker/usage_meter.py) and hands it to the
handlers through `HandlerDeps.usage`. `MeteredHandler` counts every update a bot handles
against its owner's messages-per-day quota and leaves updates past it unhandled; the
`openai` handler asks `llm_allowed` before calling the model and reports the tokens used.
"""

from __future__ import annotations

from bots.handlers.base import BotContext, Handler, UsageGate
from bots.telegram.update import Incoming


class MeteredHandler:
    """A handler whose updates count against the owner's messages quota."""

    def __init__(self, inner: Handler, gate: UsageGate) -> None:
        self.inner = inner
        self._gate = gate

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        """Runs in the chat's task. Over the quota the update is confirmed, not answered."""
        if await self._gate.admit_message(ctx.bot_id):
            await self.inner.handle(update, ctx)

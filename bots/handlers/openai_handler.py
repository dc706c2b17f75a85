"""`openai`: answer with an LLM, remembering the conversation in the chat's context.

Per update (one chat's updates never overlap): record the user's message (in groups
prefixed with the speaker's name) while the model is asked — the prompt is built from
the chat's recent messages that fit the model's context window
(`bots/handlers/prompt.py`), "typing" shows while the model thinks — then, once the
message is recorded, send the answer (split past 4,096 characters) and record it.
Commands: /start greets, /reset forgets the chat, /operator (or the bot's
`handoff_keyword`) hands the chat to a human: the bot records but no longer answers it
until `context.release_chat`. Commands during a handoff stay commands (never recorded
as text for the model): /reset forgets the messages and keeps the handoff, /start and
/operator say a human is coming, others are ignored.
When the model is unavailable the user gets a friendly fallback, never silence; a
prompt the upstream rejects (400, e.g. a window configured too large) is retried once
with the newest turn alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import structlog

from bots.handlers.base import BotContext, HandlerDeps
from bots.handlers.llm_settings import LLMBotSettings, parse_settings
from bots.handlers.prompt import Prompt, fit_prompt, prompt_budget, speaker_turn
from bots.handlers.textsplit import split_message
from bots.llm.client import LLMClient, LLMUnavailable
from bots.telegram.errors import TRANSIENT, TelegramError
from bots.telegram.update import Incoming
from context import HANDOFF_KEY, Changes, Context, Message, handed_off, handoff_changes
from context.model import apply_changes

log = structlog.get_logger(__name__)

RESET_TEXT: Final = "Done: I've forgotten our conversation."
HANDOFF_TEXT: Final = "I've asked a human operator to take over; they will answer here soon."
#: Telegram shows "typing" for 5 s; refresh it a little sooner.
TYPING_EVERY_S: Final = 4.5
#: Dialog key remembering the update whose user message is recorded (retries skip it).
LAST_UPDATE: Final = "last_update_id"


class OpenAIHandler:
    def __init__(self, deps: HandlerDeps) -> None:
        self._store = deps.context
        self._llm = deps.llm
        self._usage = deps.usage
        self._parsed: tuple[Mapping[str, Any], LLMBotSettings] | None = None

    async def handle(self, update: Incoming, ctx: BotContext) -> None:
        """Runs in the chat's task."""
        text = update.text
        if text is None or not text.strip():
            return
        settings = self._settings(ctx)
        command = _command(text, ctx.username)
        if command == "":
            return  # a command addressed to another bot in a group
        store = self._store
        if store is None:
            log.error("openai.no_context_store", bot_id=ctx.bot_id)
            await self._reply(ctx, update, settings.fallback_text)
            return
        bot_id, chat_id = ctx.bot_id, update.chat_id
        user = Message("user", speaker_turn(text, update.message))
        state = await store.load(bot_id, chat_id)
        recorded = state.dialog.get(LAST_UPDATE) == update.update_id  # a retry of this update
        if handed_off(state) and command is not None:
            await self._command_in_handoff(ctx, update, settings, command, state)
            return
        if handed_off(state):
            if not recorded:
                state = await store.save(bot_id, chat_id, self._record(user, update))
                recorded = True
            if handed_off(state):
                return  # a human has this chat
        match command:
            case "/start":
                await self._reply(ctx, update, settings.greeting)
                return
            case "/reset":
                await store.save(bot_id, chat_id, Changes(reset=True))
                await self._reply(ctx, update, RESET_TEXT)
                return
            case "/operator":
                await self._hand_off(ctx, update, user if not recorded else None, "command")
                return
        if settings.wants_handoff(text):
            await self._hand_off(ctx, update, user if not recorded else None, "keyword")
            return
        saving: asyncio.Task[Context] | None = None
        if not recorded:
            # the model is asked while the turn is written (its round trip is off the
            # reply's path); the reply waits for the write, so a turn is recorded before
            # it is answered, and a chat a human took meanwhile gets no answer
            turn = self._record(user, update)
            saving = asyncio.create_task(
                store.save(bot_id, chat_id, turn), name=f"bot:{bot_id}:chat:{chat_id}:record"
            )
            state = apply_changes(state, turn, store.config.max_messages)
        typing: list[asyncio.Task[None]] = []  # cancelled by `_ask`, awaited after the reply
        try:
            try:
                usage = self._usage
                if usage is not None and not await usage.llm_allowed(bot_id):
                    # the owner's LLM tokens for today are used up: no model call
                    if saving is not None and handed_off(await saving):
                        return
                    log.debug("openai.over_quota", bot_id=bot_id)
                    await self._reply(ctx, update, usage.fallback_text)
                    return
                answer = await self._ask(ctx, update, settings, state, typing)
                if saving is not None and handed_off(await saving):
                    return  # a human has this chat now: the model's answer is not sent
            finally:
                await _settle(saving)
            await self._reply(ctx, update, settings.fallback_text if answer is None else answer)
        finally:
            await asyncio.gather(*typing, return_exceptions=True)
        if answer is not None:
            await store.save(bot_id, chat_id, Changes(append=(Message("assistant", answer),)))

    # -- steps ------------------------------------------------------------------------------

    @staticmethod
    def _record(user: Message, update: Incoming) -> Changes:
        return Changes(append=(user,), dialog_set={LAST_UPDATE: update.update_id})

    async def _command_in_handoff(
        self,
        ctx: BotContext,
        update: Incoming,
        settings: LLMBotSettings,
        command: str,
        state: Context,
    ) -> None:
        """A human has the chat: commands act as commands, none becomes text for the model."""
        assert self._store is not None
        match command:
            case "/reset":
                mark = {HANDOFF_KEY: state.dialog[HANDOFF_KEY]}  # the human keeps the chat
                await self._store.save(
                    ctx.bot_id, update.chat_id, Changes(reset=True, dialog_set=mark)
                )
                await self._reply(ctx, update, RESET_TEXT)
            case "/start" | "/operator":
                await self._reply(ctx, update, HANDOFF_TEXT)
            case _:
                log.debug("openai.command_ignored_in_handoff", bot_id=ctx.bot_id, command=command)

    async def _hand_off(
        self, ctx: BotContext, update: Incoming, user: Message | None, reason: str
    ) -> None:
        assert self._store is not None
        await self._store.save(ctx.bot_id, update.chat_id, handoff_changes(reason, user))
        log.info("chat.handoff", bot_id=ctx.bot_id, chat_id=update.chat_id, reason=reason)
        await self._reply(ctx, update, HANDOFF_TEXT)

    async def _ask(
        self,
        ctx: BotContext,
        update: Incoming,
        settings: LLMBotSettings,
        state: Context,
        typing: list[asyncio.Task[None]],
    ) -> str | None:
        """The model's answer, or None when it is unavailable (the caller sends a fallback).
        Its "typing" task is cancelled on return and left in `typing` for the caller to
        await after the reply (a loop turn less between the answer and the reply)."""
        llm = self._llm
        if llm is None:
            log.error("openai.not_configured", bot_id=ctx.bot_id)
            return None
        prompt = build_prompt(settings, state, llm.context_window_tokens)
        typing.append(
            asyncio.create_task(
                _keep_typing(ctx, update.chat_id),
                name=f"bot:{ctx.bot_id}:chat:{update.chat_id}:typing",
            )
        )
        try:
            try:
                text = await self._complete(llm, ctx.bot_id, settings, prompt)
            except LLMUnavailable as exc:
                if exc.reason != "rejected" or len(prompt) <= 2:
                    raise
                # our window is wrong for this model: the newest turn alone, in a quarter
                # of it (the next message tries the full budget again)
                window = settings.context_window_tokens or llm.context_window_tokens
                short = fit_prompt(settings.system_prompt, state.messages, window // 4, 1)
                log.info("openai.prompt_rejected_retrying_short", bot_id=ctx.bot_id)
                text = await self._complete(llm, ctx.bot_id, settings, short)
        except LLMUnavailable as exc:
            log.info("openai.fallback", bot_id=ctx.bot_id, reason=exc.reason)
            return None
        finally:
            typing[-1].cancel()  # before the reply: no "typing" after it
        return text if text.strip() else None

    async def _complete(
        self, llm: LLMClient, bot_id: int, settings: LLMBotSettings, prompt: Prompt
    ) -> str:
        done = await llm.complete(
            bot_id,
            prompt,
            model=settings.model,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )
        if self._usage is not None:
            self._usage.count_llm_tokens(bot_id, done.prompt_tokens + done.completion_tokens)
        return done.text

    async def _reply(self, ctx: BotContext, update: Incoming, text: str) -> None:
        for i, piece in enumerate(split_message(text)):
            reply_to = update.message_id if i == 0 else None
            await ctx.api.send_message(update.chat_id, piece, reply_to=reply_to)

    def _settings(self, ctx: BotContext) -> LLMBotSettings:
        """Parsed once per settings object (a retune hands the actor a new one)."""
        parsed = self._parsed
        if parsed is not None and parsed[0] is ctx.settings:
            return parsed[1]
        settings, problems = parse_settings(ctx.settings)
        for problem in problems:
            log.warning("openai.bad_setting", bot_id=ctx.bot_id, problem=problem)
        self._parsed = (ctx.settings, settings)
        return settings


def build_prompt(settings: LLMBotSettings, state: Context, window_tokens: int) -> Prompt:
    """System prompt, then the chat's most recent user and assistant messages: at most
    `max_history_messages`, and no more than fit the model's window."""
    window = settings.context_window_tokens or window_tokens
    budget = prompt_budget(window, settings.max_tokens)
    return fit_prompt(settings.system_prompt, state.messages, budget, settings.max_history_messages)


def _command(text: str, username: str) -> str | None:
    """ "/start" for "/start" or "/start@ourbot ..."; "" for another bot's; None if no command."""
    if not text.startswith("/"):
        return None
    head = text.split(maxsplit=1)[0]
    name, _, target = head.partition("@")
    if target and target.casefold() != username.casefold():
        return ""
    return name.casefold()


async def _settle(saving: asyncio.Task[Context] | None) -> None:
    """Leaving early (an error, a cancel): a write still running is cancelled, as it
    would have been awaited here before; a failed one's error is the caller's already."""
    if saving is None:
        return
    if not saving.done():
        saving.cancel()
        await asyncio.gather(saving, return_exceptions=True)
    elif not saving.cancelled():
        saving.exception()  # retrieved: raised by `await saving` or superseded


async def _keep_typing(ctx: BotContext, chat_id: int) -> None:
    """Runs beside the model call until cancelled. Best effort: failures are ignored."""
    while True:
        try:
            await ctx.api.once(
                "sendChatAction", {"chat_id": chat_id, "action": "typing"}, None, timeout=5.0
            )
        except (TelegramError, *TRANSIENT) as exc:
            log.debug("openai.typing_failed", bot_id=ctx.bot_id, error=type(exc).__name__)
        await asyncio.sleep(TYPING_EVERY_S)

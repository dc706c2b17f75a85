"""Folds the context store's and the LLM client's cumulative statistics into Prometheus.

Runs in the worker, once per heartbeat (the hot path never touches metric objects).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bots.llm.client import LLMClient
    from context import ContextStore


class ContextMetrics:
    def __init__(self, per_bot_labels: bool) -> None:
        self._per_bot = per_bot_labels
        self._seen: dict[tuple[str, ...], int] = {}

    def _add(self, counter: Any, key: tuple[str, ...], total: int) -> None:
        """Increment `counter` by how much `total` grew since the last export."""
        delta = total - self._seen.get(key, 0)
        self._seen[key] = total
        if delta > 0:
            counter.inc(delta)

    def export(self, context: ContextStore | None, llm: LLMClient | None) -> None:
        from supervisor.metrics import metrics

        m = metrics()
        if context is not None:
            s = context.statistics()
            health = context.health()
            for layer, hit, miss in (
                ("memory", s.memory_hits, s.memory_misses),
                ("redis", s.redis_hits, s.redis_misses),
                ("postgres", s.postgres_hits, s.postgres_misses),
            ):
                self._add(m.context_lookups.labels(layer=layer, result="hit"), (layer, "h"), hit)
                self._add(m.context_lookups.labels(layer=layer, result="miss"), (layer, "m"), miss)
            self._add(m.context_saves, ("saves",), s.saves)
            self._add(m.context_conflicts, ("conflicts",), s.conflicts)
            m.context_degraded.labels(layer="redis").set(int(health["redis"] == "degraded"))
            m.context_degraded.labels(layer="postgres").set(int(health["postgres"] == "degraded"))
            m.context_pending.labels(layer="redis").set(s.pending_redis_writes)
            m.context_pending.labels(layer="postgres").set(s.durable_queued)
        if llm is not None:
            st = llm.statistics()
            self._add(m.llm_requests.labels(outcome="ok"), ("llm", "ok"), st.succeeded)
            self._add(m.llm_requests.labels(outcome="failed"), ("llm", "failed"), st.failed)
            self._add(m.llm_requests.labels(outcome="refused"), ("llm", "refused"), st.refused)
            self._add(m.llm_tokens.labels(kind="prompt"), ("tok", "p"), st.prompt_tokens)
            self._add(m.llm_tokens.labels(kind="completion"), ("tok", "c"), st.completion_tokens)
            m.llm_breaker_open.set(int(st.breaker_state != "closed"))
            if self._per_bot:
                for bot_id, total in st.tokens_by_bot.items():
                    label = str(bot_id)
                    self._add(m.llm_bot_tokens.labels(bot_id=label), ("bot", label), total)

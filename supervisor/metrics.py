"""Prometheus metrics for the whole host, in prometheus_client's multiprocess mode.

Workers write to mmap files in PROMETHEUS_MULTIPROC_DIR (set by the master before
it spawns them); the master's /metrics merges them. The hot path never touches
these objects: workers fold plain counters into them once per heartbeat.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def prepare_dir(state_dir: Path) -> Path:
    """Runs in the master before anything imports prometheus_client. Wipes old files,
    and the directories of masters that died without removing theirs (`remove_dir`)."""
    state_dir = Path(state_dir).absolute()
    for old in state_dir.glob("metrics-*"):
        pid = old.name.removeprefix("metrics-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = state_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[ENV] = str(path)
    return path


def remove_dir(path: Path) -> None:
    """At the master's exit: its workers are gone, so are their files."""
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@cache
def metrics() -> SimpleNamespace:
    """The metric objects, created once per process (after ENV is set)."""
    from prometheus_client import Counter, Gauge, Histogram

    return SimpleNamespace(
        updates_received=Counter(
            "botvisor_updates_received_total", "Updates received from Telegram (new ones)."
        ),
        updates_duplicate=Counter(
            "botvisor_updates_duplicate_total", "Re-delivered updates dropped as duplicates."
        ),
        updates_handled=Counter("botvisor_updates_handled_total", "Updates handled."),
        updates_dropped=Counter(
            "botvisor_updates_dropped_total", "Updates given up after transient failures."
        ),
        handler_errors=Counter("botvisor_handler_errors_total", "Handler failures."),
        messages_sent=Counter("botvisor_messages_sent_total", "Messages sent to Telegram."),
        telegram_429=Counter("botvisor_telegram_429_total", "429 answers from Telegram."),
        conflicts=Counter("botvisor_telegram_conflicts_total", "409 answers to getUpdates."),
        limiter_waits=Counter(
            "botvisor_limiter_waits_total", "Sends that waited for the rate limiter."
        ),
        actor_restarts=Counter("botvisor_actor_restarts_total", "Bot actor restarts."),
        poll_errors=Counter(
            "botvisor_poll_errors_total", "getUpdates answered 429/5xx or not at all (retried)."
        ),
        latency=Histogram(
            "botvisor_update_latency_seconds",
            "From receiving an update to finishing its handler.",
            buckets=LATENCY_BUCKETS,
        ),
        bots=Gauge("botvisor_bots", "Bot actors by state.", ["state"], multiprocess_mode="livesum"),
        loop_lag=Gauge(
            "botvisor_worker_loop_lag_seconds",
            "Event loop lag measured by each worker's heartbeat.",
            ["worker"],
            multiprocess_mode="livemax",
        ),
        worker_restarts=Counter(
            "botvisor_worker_restarts_total", "Worker processes restarted by the master."
        ),
        workers=Gauge("botvisor_workers", "Worker processes alive.", multiprocess_mode="livesum"),
        context_lookups=Counter(
            "botvisor_context_lookups_total",
            "Context reads by layer (memory, redis, postgres) and result (hit, miss).",
            ["layer", "result"],
        ),
        context_saves=Counter("botvisor_context_saves_total", "Context writes."),
        context_conflicts=Counter(
            "botvisor_context_conflicts_total", "Context writes retried on fresher state."
        ),
        context_degraded=Gauge(
            "botvisor_context_degraded",
            "1 while a worker serves context without this layer (redis, postgres).",
            ["layer"],
            multiprocess_mode="livemax",
        ),
        context_pending=Gauge(
            "botvisor_context_pending_writes",
            "Context writes queued in memory for a layer (redis, postgres).",
            ["layer"],
            multiprocess_mode="livesum",
        ),
        llm_requests=Counter(
            "botvisor_llm_requests_total",
            "LLM completions by outcome (ok, failed, refused by the open breaker).",
            ["outcome"],
        ),
        llm_tokens=Counter(
            "botvisor_llm_tokens_total", "LLM tokens used, by kind (prompt, completion).", ["kind"]
        ),
        llm_bot_tokens=Counter(
            "botvisor_llm_bot_tokens_total",
            "LLM tokens used per bot (only with metrics.per_bot_labels).",
            ["bot_id"],
        ),
        context_cache_bytes=Gauge(
            "botvisor_context_cache_bytes",
            "Bytes of chat contexts cached in memory (capped by context.cache_bytes_worker).",
            multiprocess_mode="livesum",
        ),
        context_cache_entries=Gauge(
            "botvisor_context_cache_entries",
            "Chat contexts cached in memory.",
            multiprocess_mode="livesum",
        ),
        context_cache_evictions=Counter(
            "botvisor_context_cache_evictions_total",
            "Cached contexts evicted by the worker-wide byte cap (they reload from Redis).",
        ),
        ratelimit_chat_keys=Gauge(
            "botvisor_ratelimit_chat_keys",
            "Per-chat rate limiter keys held (capped by ratelimit.chat_keys_worker_max).",
            multiprocess_mode="livesum",
        ),
        ratelimit_keys_evicted=Counter(
            "botvisor_ratelimit_chat_keys_evicted_total",
            "Idle per-chat limiter keys evicted by the worker-wide cap.",
        ),
        queued_updates=Gauge(
            "botvisor_queued_updates",
            "Updates received and not yet handled (capped by bots.queued_max_worker).",
            multiprocess_mode="livesum",
        ),
        poll_pauses=Counter(
            "botvisor_poll_pauses_total",
            "Polls that waited because the worker's queued updates were at the cap.",
        ),
        llm_breaker_open=Gauge(
            "botvisor_llm_breaker_open",
            "1 while a worker's LLM circuit breaker is open or half-open.",
            multiprocess_mode="livemax",
        ),
        webhook_requests=Counter(
            "botvisor_webhook_requests_total",
            "Webhook ingress requests by result: accepted, unauthorized (missing or wrong "
            "secret token), bad_request, backlog_full (429), unavailable (503, Redis down).",
            ["result"],
        ),
    )


def render(host: str | None = None) -> bytes:
    """Runs in the master: the merged text exposition of every process, every sample
    labelled with this host's id (hosts of a cluster scrape alike)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    collector = MultiProcessCollector(None)
    registry.register(collector if host is None else _HostLabel(collector, host))
    return generate_latest(registry)


class _HostLabel:
    """A collector adding `host="<id>"` to every sample of another."""

    def __init__(self, inner: Any, host: str) -> None:
        self._inner, self._host = inner, host

    def collect(self) -> Iterator[Any]:
        for family in self._inner.collect():
            family.samples = [
                s._replace(labels={"host": self._host, **s.labels}) for s in family.samples
            ]
            yield family


def mark_dead(pid: int) -> None:
    """Runs in the master when a worker exits: drop its live gauges."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid)

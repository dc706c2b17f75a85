"""Every Redis key and channel botvisor uses, in one place (arq's constants.py idea).

No f-string key is built anywhere else.
"""

from __future__ import annotations


def control_channel(prefix: str) -> str:
    """Pub/sub channel carrying hints ("reconcile now"); never the source of truth."""
    return f"{prefix}ctl"


def heartbeat_key(prefix: str, host: str, worker: int) -> str:
    """A worker's liveness record, written from its event loop with a TTL."""
    return f"{prefix}hb:{host}:{worker}"


def context_key(prefix: str, bot_id: int, chat_id: int, namespace: str) -> str:
    """Conversation context of one chat: namespace is dialog, messages or prefs."""
    return f"{prefix}ctx:{bot_id}:{chat_id}:{namespace}"


def context_version_key(prefix: str, bot_id: int, chat_id: int) -> str:
    """A random token replaced on every write of a chat's context (compare-and-set)."""
    return f"{prefix}ctx:{bot_id}:{chat_id}:ver"


def offset_key(prefix: str, bot_id: int) -> str:
    """A bot's confirm watermark, left by its last poller for the next one."""
    return f"{prefix}offset:{bot_id}"


def inbox_key(prefix: str, shard: int) -> str:
    """A shard's durable inbox: a Stream of polled updates, one consumer group."""
    return f"{prefix}inbox:{shard}"


def inbox_group(prefix: str) -> str:
    """The consumer group of every inbox stream (one per stream, same name)."""
    return f"{prefix}inbox"


def status_reply_key(prefix: str, request_id: str) -> str:
    """A list the master and workers push their status into, for one `botvisor status`."""
    return f"{prefix}status:{request_id}"


def fence_key(prefix: str, shard: int) -> str:
    """A shard's fencing token: the epoch of its current lease (ipc/fencing.py)."""
    return f"{prefix}fence:{shard}"


def usage_key(prefix: str, owner_id: int, day: str) -> str:
    """Hash of one owner's usage on one UTC day (`day` as YYYYMMDD): messages, llm_tokens."""
    return f"{prefix}usage:{owner_id}:{day}"

"""What a worker is told and how it acts on it: the master's pipe on stdin (new settings,
shard assignments, leases; EOF means the master is gone) and the control channel
(reconcile hints, status requests). `WorkerCommands` is a base of `Worker`
(supervisor/worker/worker.py).
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from config import ConfigError, Settings
from ipc import pipe
from ipc.control import listen
from ipc.heartbeat import reply_status
from ipc.messages import BadMessage, Message, Reconcile, StatusRequest
from supervisor.registry.tokenbox import open_tokenbox
from supervisor.worker.heartbeats import WorkerHeartbeats

if TYPE_CHECKING:
    from ipc.fencing import Fencing
    from supervisor.registry.bots import Registry
    from supervisor.worker.reconcile import Reconciler


class WorkerCommands(WorkerHeartbeats):
    """The master pipe and control channel services; a base of `Worker`."""

    # set by Worker (supervisor/worker/worker.py), the services once they are open
    fencing: Fencing
    registry: Registry
    reconciler: Reconciler
    _assigned_epoch: int
    _reconcile_now: asyncio.Event

    async def _control_loop(self) -> None:
        """Hints over pub/sub. At-most-once delivery is fine: the timer reconciles anyway."""
        await listen(
            self.redis,
            self.settings.redis.prefix,
            self._on_control,
            on_subscribed=self._reconcile_now.set,  # we may have missed hints while away
        )

    async def _on_control(self, message: Message) -> None:
        match message:
            case Reconcile(bots=bots):
                self.reconciler.hint(bots)
            case StatusRequest(reply_to=reply_to):
                await reply_status(
                    self.redis, reply_to, {"role": "worker", "host": self.host, **self._status()}
                )

    def _status(self) -> dict[str, Any]:
        hb = self._last_heartbeat
        return hb.summary() if hb is not None else {"index": self.index, "state": self.state}

    async def _master_pipe(self) -> None:
        """Line-delimited JSON from the master on stdin; EOF means the master is gone."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self._log.warning("worker.master_gone")
                self._drain.set()
                return
            try:
                match pipe.decode(line):
                    case pipe.Configure(settings=settings):
                        self._reload(Settings.model_validate(settings))
                    case pipe.Assign(shards=shards, epoch=epoch):
                        self._assign(list(shards), epoch)
                    case pipe.Leases() as leases:
                        self.use_leases(leases)
            except (BadMessage, ValidationError) as exc:
                self._log.warning("worker.bad_master_message", error=type(exc).__name__)

    def use_leases(self, leases: pipe.Leases) -> None:
        """This host's renewed leases: fencing epochs and until when the bots may act."""
        deadline = math.inf if leases.valid_until is None else leases.valid_until
        self.fencing.update(leases.epochs, deadline)

    def _assign(self, shards: list[int], epoch: int) -> None:
        """New shards from the master (rebalance): reconcile to them at once."""
        self._log.info("worker.assigned", shards=len(shards), epoch=epoch)
        self.shards, self._assigned_epoch = shards, epoch
        self._reconcile_now.set()

    def _reload(self, settings: Settings) -> None:
        from config.log_levels import set_level

        self.settings = settings
        set_level(settings.log.level)
        self.fleet.retune_all(settings)
        try:  # a rotated keyring (security.encryption_key / previous_keys)
            self.registry.use_tokenbox(open_tokenbox(settings))
        except ConfigError as exc:
            self._log.error("worker.keyring_rejected", error=str(exc), kept="running keyring")
        self._log.info("worker.reloaded")

"""Change notification between replicas: one Redis pub/sub channel, messages tagged by topic.

A message is ``{"t": topic, "o": origin, "d": data}``; a replica skips its own. Pub/sub does not
keep messages for a subscriber that was away, so after every (re)subscription each topic's
listeners are called with ``None``: reload everything. That makes a lost connection cost one
reload, never a stale mirror.
"""

from __future__ import annotations

import asyncio
import os
import random

import orjson
import structlog
from redis import exceptions as redis_errors

from proxy.state.base import CLOSE_S, bounded

log = structlog.get_logger("proxy.state")

_RETRY_MAX = 5.0


class Bus:
    def __init__(self, client, channel: str, deliver, origin: str | None = None) -> None:
        self.client = client
        self.channel = channel
        self.origin = origin or os.urandom(6).hex()  # this process
        self._deliver = deliver  # async (topic, data | None) -> None; topic None: every topic
        self.synced = asyncio.Event()  # set once the first subscription has caught up
        self._task: asyncio.Task | None = None

    async def publish(self, topic: str, data: dict | None = None) -> None:
        await self.client.publish(self.channel, orjson.dumps({"t": topic, "o": self.origin, "d": data}))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="state-bus")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2 * CLOSE_S)  # its pubsub's close is bounded too

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
                log.warning("state_bus_reconnect", error=type(exc).__name__, retry_in=delay)
            except Exception:  # a listener's bug must not end change notification for good
                log.exception("state_bus_listener_failed")
            await asyncio.sleep(random.uniform(delay / 2, delay))  # jittered: replicas do not resubscribe in step
            delay = min(delay * 2, _RETRY_MAX)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            await self._deliver(None, None)  # catch up on whatever was missed while away
            self.synced.set()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    await self._dispatch(message["data"])
        finally:
            await bounded(pubsub.aclose(), "pubsub")

    async def _dispatch(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
            topic, origin, data = message["t"], message["o"], message.get("d")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("state_bus_bad_message", size=len(raw))
            return
        if origin != self.origin:
            await self._deliver(topic, data)

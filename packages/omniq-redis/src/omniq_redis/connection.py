"""The Redis engine helper: driver errors, the URL check, and the client the components hold.

Each component holds an :class:`omniq.connection.Connection` built by :func:`redis_connection`,
which opens a :class:`RedisClient` (``redis.asyncio`` pool, scripts loaded, plus the lane for
sequential calls, :mod:`omniq_redis.lane`) and closes it; the core's helper owns the rest (open once,
fork safety, errors translated with :data:`ERRORS` and the password redacted).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from omniq.connection import Connection
from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError, redact_url
from omniq_redis.blocking import BlockingCalls
from omniq_redis.lane import Lane
from omniq_redis.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_URL", "ERRORS", "RedisClient", "check_url", "close_client", "open_client", "redis_connection"]

logger = logging.getLogger("omniq.redis")

#: URL used when none is configured.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: driver error -> OmniQ error. Order matters: the first matching class wins, so connection
#: problems come before RedisError.
ERRORS: Mapping[type[BaseException], type[OmniQError]] = {
    rexc.ConnectionError: BackendUnavailableError,
    rexc.TimeoutError: BackendUnavailableError,
    ConnectionError: BackendUnavailableError,
    OSError: BackendUnavailableError,
    rexc.RedisError: BackendError,
}


def check_url(url: str | None) -> str:
    """The URL to use (the default for None); anything but redis://, rediss:// or unix:// is refused."""
    url = url or DEFAULT_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(f"url={redact_url(url)!r} is not valid: expected a redis:// or rediss:// URL")
    return url


def redis_connection(
    url: str, options: Mapping[str, Any], *, blocking: bool = False, scripts: bool = True
) -> Connection[RedisClient]:
    """A component's connection: opens a :class:`RedisClient` on first use, closes it once.

    Args:
        url: a URL :func:`check_url` accepted.
        options: extra keyword arguments for ``redis.asyncio.Redis.from_url``.
        blocking: for long blocking calls (no socket timeout).
        scripts: load the Lua scripts when opening.
    """
    return Connection(
        url,
        open=partial(open_client, url, options, blocking=blocking, scripts=scripts),
        close=close_client,
        errors=ERRORS,
    )


async def open_client(
    url: str, options: Mapping[str, Any], *, blocking: bool = False, scripts: bool = True
) -> RedisClient:
    """Open the pool, check the server answers and (``scripts``) load the Lua scripts."""
    settings = {"retry": Retry(NoBackoff(), 0), **_settings(options, blocking)}
    pool = aioredis.Redis.from_url(url, decode_responses=False, **settings)
    try:
        await pool.ping()
        if scripts:
            async with pool.pipeline(transaction=False) as pipe:
                for script in SCRIPTS.values():
                    pipe.script_load(script.source)
                await pipe.execute()
    except BaseException:
        await pool.aclose()
        raise
    return RedisClient(url, pool, options)


def _settings(options: Mapping[str, Any], blocking: bool) -> dict[str, Any]:
    """The pool's keyword arguments (the retry policy apart: each driver flavour has its own class)."""
    # Scripts are not idempotent: a blind retry after a lost reply could apply one twice, so the
    # clients retry nothing. Failures surface as BackendUnavailableError and the worker backs off.
    return {
        "socket_connect_timeout": 5.0,
        "socket_timeout": None if blocking else 30.0,
        **_pool_health_options(),
        **options,
    }


async def close_client(client: RedisClient) -> None:
    """Close the lane and the pools."""
    client.use_lane(False)
    client.blocking.close()
    await client.redis.aclose()


def _pool_health_options() -> dict[str, Any]:
    """Keep redis-py's stale-connection check on.

    redis-py 8 skips the pool's check for connections the server closed while
    maintenance notifications are "auto" (its default); with retries off, the
    first command on such a connection would fail although the server is back.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py < 8 always checks
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


class RedisClient:
    """An open ``redis.asyncio`` pool plus the lane, and the script runner over both.

    Driver errors propagate untranslated: callers run it inside their
    ``Connection.errors()``.
    """

    __slots__ = ("_lane", "blocking", "redis", "url")

    def __init__(self, url: str, pool: aioredis.Redis, options: Mapping[str, Any]) -> None:
        self.url = url
        #: the pool (``decode_responses=False``). Typed ``Any`` on purpose: redis-py annotates every
        #: reply as a union of the bytes and str (and sync and async) variants, while this client
        #: always returns bytes.
        self.redis: Any = pool
        self._lane: Lane | None = None
        self.use_lane(True)
        #: the scripts run from threads with no event loop (the sync API's enqueue)
        self.blocking = BlockingCalls(url, _settings(options, False))

    def use_lane(self, enabled: bool) -> None:
        """Send sequential calls through the lane (the default where it can speak for the URL's options) or not."""
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.close()
        pool = self.redis.connection_pool
        if enabled and Lane.supports(pool.connection_kwargs):
            self._lane = Lane(pool.connection_kwargs, pool.connection_class)

    @property
    def lane(self) -> Lane | None:
        """The lane, or None when sequential calls use the pool too."""
        return self._lane

    async def run(self, name: str, args: Sequence[Any], keys: Sequence[str] = ()) -> Any:
        """Run a script by SHA, loading it again when the server lost it (restart, SCRIPT FLUSH).

        Sequential callers (a producer's enqueue loop, a worker's claims and
        finishes) go through the lane; concurrent ones through the pool.
        """
        script = SCRIPTS[name]
        lane = self._lane
        if lane is not None and lane.free:
            try:
                return await lane.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                pass  # the script did not run: the pool path below loads it and runs it
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, timeout: float | None) -> list[Any]:
        """Run raw commands in one round trip; replies in order, error replies as exception objects.

        On the lane when it is free, else on a pooled connection. ``timeout``
        bounds the lane's wait for the replies (give blocking commands their
        own block time plus a margin).
        """
        lane = self._lane
        if lane is not None and lane.free:
            return await lane.call_many(commands, timeout)
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))

    async def run_many(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run several scripts (without KEYS) in one pipelined round trip; results in order."""
        if len(calls) == 1:
            return [await self.run(calls[0][0], calls[0][1])]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, args in calls:
                pipe.evalsha(SCRIPTS[name].sha, 0, *args)
            results = await pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, rexc.NoScriptError):
                # That call did not run, so running it again is safe.
                results[index] = await self.run(calls[index][0], calls[index][1])
            elif isinstance(result, Exception):
                raise result
        return list(results)

    async def check_eviction_policy(self) -> None:
        """Warn when Redis may evict keys (tasks could silently disappear)."""
        try:
            reply = await self.redis.config_get("maxmemory-policy")
        except rexc.RedisError:
            return  # CONFIG is often disabled on managed Redis; the check is advisory.
        policy = reply.get(b"maxmemory-policy", reply.get("maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy and policy != "noeviction":
            logger.warning(
                "Redis at %s has maxmemory-policy=%s: under memory pressure it may evict tasks; "
                "set maxmemory-policy noeviction",
                redact_url(self.url),
                policy,
            )

"""Lua of the worker registry: register (or refresh), unregister, list the live workers.

The registry is a hash ``{P}:workers`` (id -> msgpack WorkerInfo) beside a zset
``{P}:workers:exp`` (id -> expiry µs on the server clock). Substituted names and
helpers come from :mod:`omniq_redis.scripts`.
"""

from __future__ import annotations

__all__ = ["LIST_WORKERS", "REGISTER_WORKER", "UNREGISTER_WORKER"]

# ARGV: P, worker id, msgpack WorkerInfo, ttl µs.
REGISTER_WORKER = r"""
local W = '{' .. P .. '}:$WORKERS'
redis.call('HSET', W, ARGV[2], ARGV[3])
redis.call('ZADD', '{' .. P .. '}:$WORKER_EXPIRY', fmt(now_us() + tonumber(ARGV[4])), ARGV[2])
return 1
"""

# ARGV: P, worker id.
UNREGISTER_WORKER = r"""
redis.call('HDEL', '{' .. P .. '}:$WORKERS', ARGV[2])
return redis.call('ZREM', '{' .. P .. '}:$WORKER_EXPIRY', ARGV[2])
"""

# ARGV: P. Drops the entries whose expiry has passed; returns the others' blobs.
LIST_WORKERS = r"""
local W, X = '{' .. P .. '}:$WORKERS', '{' .. P .. '}:$WORKER_EXPIRY'
local now = fmt(now_us())
for _, id in ipairs(redis.call('ZRANGE', X, '-inf', now, 'BYSCORE')) do redis.call('HDEL', W, id) end
redis.call('ZREMRANGEBYSCORE', X, '-inf', now)
return redis.call('HVALS', W)
"""

"""The Lua scripts: every state change of a task is one of these, atomically.

Each script is loaded once per connection pool (SCRIPT LOAD at connect) and
run with EVALSHA (:class:`omniq_redis._client.RedisClient` reloads on
NOSCRIPT). Time always comes from the server (``TIME``), in microseconds,
never from a client clock (an enqueueing client's created_at and eta are the
task's own data). ``ARGV[1]`` is the key prefix, and key names come from
:mod:`omniq_redis.keys`, substituted below; the two scripts on the hottest
paths (``enqueue_one``, ``append_events``) take their keys in ``KEYS``
instead, built by the client.

Round trips: enqueue_many, claim (per queue), extend, finish, cancel and
set_paused are one script call each; a batch spanning several queues runs
one call per queue in one pipeline.
"""

from __future__ import annotations

import hashlib
import re
from string import Template

from omniq_redis import keys

__all__ = ["SCRIPTS", "Script"]

#: Helpers a script may use, in definition order: (name, Lua). A script carries only those its
#: body names (and what they name in turn): each EVALSHA runs its whole chunk, so an unused helper
#: (a closure, the ROW table) is work on every call.
_HELPERS: list[tuple[str, str]] = [
    (
        "P",
        r"""
local P = ARGV[1]
""",
    ),
    (
        "IDX",
        r"""
local IDX = '{' .. P .. '}:$INDEX'
""",
    ),
    (
        "UNIQ",
        r"""
local UNIQ = '{' .. P .. '}:$UNIQUE'
""",
    ),
    (
        "qtag",
        r"""
local function qtag(q) return '{' .. P .. ':' .. q .. '}' end
""",
    ),
    (
        "fmt",
        r"""
local function fmt(n) return string.format('%.0f', n) end
""",
    ),
    (
        "now_us",
        r"""
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
""",
    ),
    (
        "ROW",
        r"""
local ROW = {$ROW}
""",
    ),
    (
        "row",
        r"""
local function row(h) return redis.call('HMGET', h, unpack(ROW)) end
""",
    ),
    (
        "member",
        r"""
-- the READY member "<ready time:016><seq:012>:<id>" of a task the server requeues at t µs (a retry,
-- an expired lease). The sequence number only orders tasks due in the same microsecond; enqueue
-- takes the member its client built, with the client's own sequence.
local function member(tag, t, id)
  if t < 0 then t = 0 end
  local seq = redis.call('INCR', tag .. ':$SEQ')
  return string.format('%016.0f%012d:', t, seq % 1000000000000) .. id
end
""",
    ),
    (
        "signal",
        r"""
-- leave up to n wake-up tokens, keeping at most $SIGNAL_CAP: a list already full is left alone
-- (checking its length is cheaper than pushing and trimming)
local function signal(tag, n)
  if n <= 0 then return end
  local sig = tag .. ':$SIGNAL'
  local room = $SIGNAL_CAP - redis.call('LLEN', sig)
  if room <= 0 then return end
  if n == 1 then
    redis.call('LPUSH', sig, '1')
    return
  end
  local toks = {}
  for j = 1, math.min(n, room) do toks[j] = '1' end
  redis.call('LPUSH', sig, unpack(toks))
end
""",
    ),
    (
        "release_unique",
        r"""
local function release_unique(uk, id)
  if uk and uk ~= '' and redis.call('HGET', UNIQ, uk) == id then redis.call('HDEL', UNIQ, uk) end
end
""",
    ),
    (
        "make_ready",
        r"""
-- put a PENDING task where claim finds it: READY when due, DELAYED when its eta is ahead.
-- Returns the wake-up tokens it is worth: 1 when ready, and 1 when it moves the queue's next
-- eta earlier (an idle worker blocks only until the next eta it was told of, so it must wake
-- to learn the new one); else 0.
local function make_ready(tag, id, rm, pr, t, now)
  if t > now then
    local delayed = tag .. ':$DELAYED'
    local head = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
    redis.call('ZADD', delayed, t, id)
    if head[2] == nil or t < tonumber(head[2]) then return 1 end
    return 0
  end
  redis.call('ZADD', tag .. ':$READY', -tonumber(pr), rm)
  return 1
end
""",
    ),
]

# ARGV: P, queue, msgpack array of [id, blob, priority, eta µs or '', created µs, unique key or '',
# paused '1'/'0', attempts, max_retries, READY member], '1' to register the queue in QUEUES
# (the client sends it on its first enqueue to a queue) or '0'. One ARGV for all the tasks keeps
# the client's argument packing off the hot path. The client builds the READY member
# "<ready time (eta or created, at least 0):016><seq:012>:<id>" with its own sequence number, which
# only orders its tasks due in the same microsecond: the script formats no numbers. The hash gets
# only the fields the blob cannot answer (see task_from_row: an absent field keeps the blob's
# value). Returns the stored (or existing) id per task.
_ENQUEUE = r"""
local now = nil  -- the server clock, read only when a task has an eta to compare with it
local q = ARGV[2]
local tag = qtag(q)
local out = {}
local nready = 0
if ARGV[4] == '1' then redis.call('SADD', '{' .. P .. '}:$QUEUES', q) end
for _, it in ipairs(cmsgpack.unpack(ARGV[3])) do
  local id, blob, pr, eta, c, uk, paused, attempts, mr, rm = unpack(it)
  local result = id
  -- claims the id in the index (id -> queue) and detects a duplicate id in one call
  local dup = redis.call('HSETNX', IDX, id, q) == 0
  if not dup and uk ~= '' then
    local other = redis.call('HGET', UNIQ, uk)
    if other then
      local oq = redis.call('HGET', IDX, other)
      local st = oq and redis.call('HGET', qtag(oq) .. ':$TASK:' .. other, 's')
      if st == 'pending' or st == 'running' then
        dup = true
        result = other
        redis.call('HDEL', IDX, id)  -- not stored after all
      end
    end
  end
  if not dup then
    local h = tag .. ':$TASK:' .. id
    redis.call('HSET', h, 'b', blob, 's', 'pending', 'c', c, 'pr', pr, 'mr', mr, 'rm', rm)
    if uk ~= '' then
      redis.call('HSET', UNIQ, uk, id)
      redis.call('HSET', h, 'uk', uk)
    end
    if eta ~= '' then redis.call('HSET', h, 'e', eta) end  -- set_paused reads it on resume
    if paused == '1' then redis.call('HSET', h, 'p', '1') end
    if attempts ~= '0' then redis.call('HSET', h, 'a', attempts) end  -- claim increments it
    redis.call('ZADD', tag .. ':$STATUS:pending', c, id)
    if paused ~= '1' then
      local t = tonumber(c)
      if eta ~= '' then
        t = tonumber(eta)
        if now == nil then now = now_us() end
      end
      nready = nready + make_ready(tag, id, rm, pr, t, now or t)
    end
  end
  out[#out + 1] = result
end
signal(tag, nready)
return out
"""

# The common single enqueue: one task with no unique key, no eta, not paused and no earlier
# attempt, into a queue its client has registered. Same effects as _ENQUEUE for such a task, without
# its msgpack, loop, helpers and key building: about 14 µs less server time per call here
# (benchmarks/redis_enqueue_cost.py). KEYS: id index, task hash, pending-status zset, READY, signal
# list. ARGV: id, queue, blob, priority, -priority, created µs, max_retries, READY member.
# Returns 1 when stored, 0 when the id exists already (nothing written).
_ENQUEUE_ONE = r"""
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'b', ARGV[3], 's', 'pending', 'c', ARGV[6], 'pr', ARGV[4], 'mr', ARGV[7], 'rm', ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[8])
if redis.call('LLEN', KEYS[5]) < $SIGNAL_CAP then redis.call('LPUSH', KEYS[5], '1') end
return 1
"""

# ARGV: P, queue, limit, lease µs, worker id, token base. Returns {ROWs of the claimed tasks,
# µs until the queue's next delayed eta or -1}. Leaves a wake-up token exactly when READY is not
# empty, so a worker may block on the signal list right after a claim without missing work.
_CLAIM = r"""
local now = now_us()
local tag = qtag(ARGV[2])
local ready, delayed = tag .. ':$READY', tag .. ':$DELAYED'
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local f = redis.call('HMGET', tag .. ':$TASK:' .. id, 'rm', 'pr')
  if f[1] then redis.call('ZADD', ready, -tonumber(f[2]), f[1]) end
end
if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end
local popped = redis.call('ZPOPMIN', ready, tonumber(ARGV[3]))
local deadline = fmt(now + tonumber(ARGV[4]))
local out = {}
for i = 1, #popped, 2 do
  local id = string.sub(popped[i], 30)
  local h = tag .. ':$TASK:' .. id
  local f = redis.call('HMGET', h, 's', 'c')
  if f[1] == 'pending' then
    redis.call('HINCRBY', h, 'a', 1)
    redis.call('HSET', h, 's', 'running', 'k', ARGV[6] .. i, 'l', deadline, 'w', ARGV[5], 'sa', fmt(now), 'ua', fmt(now))
    redis.call('ZADD', tag .. ':$LEASES', deadline, id)
    redis.call('ZREM', tag .. ':$STATUS:pending', id)
    redis.call('ZADD', tag .. ':$STATUS:running', f[2], id)
    out[#out + 1] = row(h)
  end
end
local sig = tag .. ':$SIGNAL'
if redis.call('ZCARD', ready) == 0 then
  -- nothing left to claim: drop stale wake-up tokens so idle workers do not spin on them
  redis.call('DEL', sig)
elseif redis.call('LLEN', sig) == 0 then
  redis.call('LPUSH', sig, '1')
end
local head = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local next_in = -1
if head[2] ~= nil then next_in = math.max(tonumber(head[2]) - now, 0) end
return {out, next_in}
"""

# ARGV: P, lease µs, then id, token pairs. Returns the ids whose lease was extended.
_EXTEND = r"""
local now = now_us()
local deadline = fmt(now + tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local q = redis.call('HGET', IDX, id)
  if q then
    local h = qtag(q) .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 's', 'k')
    if f[1] == 'running' and f[2] == ARGV[i+1] then
      redis.call('HSET', h, 'l', deadline)
      redis.call('ZADD', qtag(q) .. ':$LEASES', deadline, id)
      out[#out + 1] = id
    end
  end
end
return out
"""

# ARGV: P, result prefix ('' = results not fused), msgpack array of [id, token, kind, eta µs or '',
# error blob or '', result blob or '', result expiry ms or '']. Returns 1/0 per outcome.
_FINISH = r"""
local now = now_us()
local RP = ARGV[2]
local out = {}
local wake = {}
for _, it in ipairs(cmsgpack.unpack(ARGV[3])) do
  local id, tok, kind, eta, err, res, pxat = unpack(it)
  local ok = 0
  local q = redis.call('HGET', IDX, id)
  if q then
    local tag = qtag(q)
    local h = tag .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 's', 'k', 'c', 'uk', 'pr', 'p', 'a')
    if f[1] == 'running' and f[2] == tok then
      ok = 1
      redis.call('ZREM', tag .. ':$LEASES', id)
      redis.call('ZREM', tag .. ':$STATUS:running', id)
      if kind == 'succeeded' or kind == 'failed' or kind == 'expired' then
        redis.call('HSET', h, 's', kind, 'k', '', 'l', '', 'fa', fmt(now), 'ua', fmt(now), 'er', err)
        redis.call('ZADD', tag .. ':$STATUS:' .. kind, f[3], id)
        release_unique(f[4], id)
      else
        local t = now
        if eta ~= '' then t = tonumber(eta) end
        local rm = member(tag, t, id)
        local a = tonumber(f[7])
        if kind == 'release' then a = math.max(a - 1, 0) elseif kind == 'reschedule' then a = 0 end
        redis.call('HSET', h, 's', 'pending', 'k', '', 'l', '', 'e', fmt(t), 'a', a, 'ua', fmt(now), 'er', err, 'rm', rm)
        if kind == 'release' then redis.call('HSET', h, 'w', '', 'sa', '') end
        redis.call('ZADD', tag .. ':$STATUS:pending', f[3], id)
        if f[6] ~= '1' then wake[tag] = (wake[tag] or 0) + make_ready(tag, id, rm, f[5], t, now) end
      end
      if RP ~= '' and res ~= '' then
        local rk = RP .. ':$RESULT:' .. id
        if pxat ~= '' then redis.call('SET', rk, res, 'PXAT', pxat) else redis.call('SET', rk, res) end
        redis.call('ZADD', RP .. ':$RESULT_INDEX', pxat ~= '' and pxat or '+inf', id)
        redis.call('PUBLISH', RP .. ':$RESULT_CHANNEL:' .. id, '1')
      end
    end
  end
  out[#out + 1] = ok
end
for tag, n in pairs(wake) do signal(tag, n) end
return out
"""

# ARGV: P, queue, limit. Returns one ROW per recovered task (as it is now).
_RECOVER = r"""
local now = now_us()
local tag = qtag(ARGV[2])
local leases = tag .. ':$LEASES'
local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
local nready = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', leases, id)
  local h = tag .. ':$TASK:' .. id
  local f = redis.call('HMGET', h, 's', 'a', 'mr', 'c', 'uk', 'pr', 'p', 'l')
  if f[1] == 'running' and tonumber(f[8]) <= now then
    redis.call('ZREM', tag .. ':$STATUS:running', id)
    local a = tonumber(f[2])
    if a >= tonumber(f[3]) + 1 then
      local err = cmsgpack.pack({type = 'LeaseExpired', traceback = '', attempt = a, retryable = false,
        message = 'the worker holding attempt ' .. a .. ' stopped renewing its lease'})
      redis.call('HSET', h, 's', 'failed', 'k', '', 'l', '', 'fa', fmt(now), 'ua', fmt(now), 'er', err)
      redis.call('ZADD', tag .. ':$STATUS:failed', f[4], id)
      release_unique(f[5], id)
    else
      local rm = member(tag, now, id)
      redis.call('HSET', h, 's', 'pending', 'k', '', 'l', '', 'e', fmt(now), 'ua', fmt(now), 'rm', rm)
      redis.call('ZADD', tag .. ':$STATUS:pending', f[4], id)
      if f[7] ~= '1' then nready = nready + make_ready(tag, id, rm, f[6], now, now) end
    end
    out[#out + 1] = row(h)
  end
end
signal(tag, nready)
return out
"""

# ARGV: P, id. Returns 1 when the task was cancelled.
_CANCEL = r"""
local now = now_us()
local id = ARGV[2]
local q = redis.call('HGET', IDX, id)
if not q then return 0 end
local tag = qtag(q)
local h = tag .. ':$TASK:' .. id
local f = redis.call('HMGET', h, 's', 'rm', 'c', 'uk')
if f[1] ~= 'pending' and f[1] ~= 'running' then return 0 end
redis.call('ZREM', tag .. ':$READY', f[2])
redis.call('ZREM', tag .. ':$DELAYED', id)
redis.call('ZREM', tag .. ':$LEASES', id)
redis.call('ZREM', tag .. ':$STATUS:' .. f[1], id)
redis.call('ZADD', tag .. ':$STATUS:cancelled', f[3], id)
redis.call('HSET', h, 's', 'cancelled', 'k', '', 'l', '', 'fa', fmt(now), 'ua', fmt(now))
release_unique(f[4], id)
return 1
"""

# ARGV: P, id, '1' to pause / '0' to resume. Returns 1 when the task exists and is not terminal.
_SET_PAUSED = r"""
local now = now_us()
local id = ARGV[2]
local q = redis.call('HGET', IDX, id)
if not q then return 0 end
local tag = qtag(q)
local h = tag .. ':$TASK:' .. id
local f = redis.call('HMGET', h, 's', 'p', 'rm', 'pr', 'e')
if f[1] ~= 'pending' and f[1] ~= 'running' then return 0 end
redis.call('HSET', h, 'p', ARGV[3], 'ua', fmt(now))
if f[1] == 'pending' then
  if ARGV[3] == '1' then
    redis.call('ZREM', tag .. ':$READY', f[3])
    redis.call('ZREM', tag .. ':$DELAYED', id)
  elseif f[2] == '1' then
    local t = now
    if f[5] and f[5] ~= '' then t = tonumber(f[5]) end
    signal(tag, make_ready(tag, id, f[3], f[4], t, now))
  end
end
return 1
"""

# ARGV: P, ids... Returns a ROW per id, or 0 for an unknown id.
_GET = r"""
local out = {}
for i = 2, #ARGV do
  local q = redis.call('HGET', IDX, ARGV[i])
  local r = q and row(qtag(q) .. ':$TASK:' .. ARGV[i])
  if r and r[1] then out[#out + 1] = r else out[#out + 1] = 0 end
end
return out
"""

# ARGV: P, queue, batch size, statuses... Deletes up to a batch per status; returns how many.
_PURGE = r"""
local tag = qtag(ARGV[2])
local n = 0
for s = 4, #ARGV do
  local st = tag .. ':$STATUS:' .. ARGV[s]
  local ids = redis.call('ZRANGE', st, 0, tonumber(ARGV[3]) - 1)
  for _, id in ipairs(ids) do
    local h = tag .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 'rm', 'uk')
    if f[1] then redis.call('ZREM', tag .. ':$READY', f[1]) end
    release_unique(f[2], id)
    redis.call('ZREM', tag .. ':$DELAYED', id)
    redis.call('ZREM', tag .. ':$LEASES', id)
    redis.call('ZREM', st, id)
    redis.call('HDEL', IDX, id)
    redis.call('DEL', h)
    n = n + 1
  end
end
return n
"""

# KEYS: stream. ARGV: P, maxlen, min id ms or '', then timestamp ms, blob pairs. The entry id is
# the event's own time when that keeps ids increasing, else the server's (always >= the event's).
# The cap is applied once per call, not per XADD (a MAXLEN on every XADD costs about 20% more).
_APPEND_EVENTS = r"""
for i = 4, #ARGV, 2 do
  local r = redis.pcall('XADD', KEYS[1], ARGV[i] .. '-*', 'd', ARGV[i+1])
  if type(r) == 'table' and r.err then
    redis.call('XADD', KEYS[1], '*', 'd', ARGV[i+1])
  end
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
if ARGV[3] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3]) end
return (#ARGV - 3) / 2
"""

_NAMES = {
    "INDEX": keys.INDEX,
    "UNIQUE": keys.UNIQUE,
    "QUEUES": keys.QUEUES,
    "READY": keys.READY,
    "DELAYED": keys.DELAYED,
    "LEASES": keys.LEASES,
    "SIGNAL": keys.SIGNAL,
    "SEQ": keys.SEQ,
    "STATUS": keys.STATUS,
    "TASK": keys.TASK,
    "RESULT": keys.RESULT,
    "RESULT_INDEX": keys.RESULT_INDEX,
    "RESULT_CHANNEL": keys.RESULT_CHANNEL,
    "SIGNAL_CAP": str(keys.SIGNAL_CAP),
    "ROW": ", ".join(f"'{name}'" for name in keys.TASK_FIELDS),
}


def _preamble(body: str) -> str:
    """The helpers ``body`` uses, directly or through another helper, in definition order."""
    wanted: set[str] = set()
    text = body
    while True:
        code_only = re.sub(r"--[^\n]*", "", text)  # a name in a comment is no use
        found = {name for name, _ in _HELPERS if name not in wanted and re.search(rf"\b{name}\b", code_only)}
        if not found:
            break
        wanted |= found
        text = "".join(code for name, code in _HELPERS if name in found)
    return "".join(code for name, code in _HELPERS if name in wanted)


class Script:
    """One Lua script: its source (preamble + body, names substituted) and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.source = Template(_preamble(body) + body).substitute(_NAMES)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


#: every script by name.
SCRIPTS: dict[str, Script] = {
    name: Script(name, body)
    for name, body in {
        "enqueue": _ENQUEUE,
        "enqueue_one": _ENQUEUE_ONE,
        "claim": _CLAIM,
        "extend": _EXTEND,
        "finish": _FINISH,
        "recover": _RECOVER,
        "cancel": _CANCEL,
        "set_paused": _SET_PAUSED,
        "get": _GET,
        "purge": _PURGE,
        "append_events": _APPEND_EVENTS,
    }.items()
}

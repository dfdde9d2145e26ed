"""Lua helpers the scripts share: a script carries only the ones it names (see :mod:`omniq_redis.scripts`)."""

from __future__ import annotations

__all__ = ["HELPERS"]

#: Helpers a script may use, in definition order: (name, Lua). A script carries only those its
#: body names (and what they name in turn): each EVALSHA runs its whole chunk, so an unused helper
#: (a closure, the ROW table) is work on every call.
HELPERS: list[tuple[str, str]] = [
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
        "task_at",
        r"""
-- the queue tag and the hash of task id; nil when the id is unknown
local function task_at(id)
  local q = redis.call('HGET', IDX, id)
  if not q then return nil end
  local tag = qtag(q)
  return tag, tag .. ':$TASK:' .. id
end
""",
    ),
    (
        "unique_holder",
        r"""
-- the id of the PENDING or RUNNING task holding unique key uk, or nil
local function unique_holder(uk)
  local other = redis.call('HGET', UNIQ, uk)
  if not other then return nil end
  local oq = redis.call('HGET', IDX, other)
  local st = oq and redis.call('HGET', qtag(oq) .. ':$TASK:' .. other, 's')
  if st == 'pending' or st == 'running' then return other end
  return nil
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
        "count_done",
        r"""
-- add n tasks that reached SUCCEEDED or FAILED at now µs to the queue's counter of that minute
-- (one INCRBY per queue and batch; the EXPIRE only when the counter is new)
local function count_done(tag, n, now)
  if n <= 0 then return end
  local k = tag .. ':$DONE:' .. fmt(math.floor(now / 60000000))
  if redis.call('INCRBY', k, n) == n then redis.call('EXPIRE', k, $DONE_TTL) end
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
    (
        "release_dependants",
        r"""
-- task id of queue tag (hash h) ended or is being deleted: one dependency less ('wt') for each task
-- waiting on it. One reaching 0 while PENDING and not paused becomes ready at its place (its READY
-- member, due at its eta or created_at, as enqueue would have put it) and its wake-up tokens are
-- added to wake[its tag], for the caller to signal once per queue. A dependant deleted meanwhile has
-- no index entry and is skipped; one cancelled is counted down all the same, so a retry of it waits
-- only for what is left; a registration of another generation than the dependant's dg (left by an
-- earlier task of its id, since replaced) is skipped. Callers call this only when h has 'dn', read in the HMGET they already do.
-- The set and the mark go: a task ends once (a retried one collects new dependants afresh).
local function release_dependants(tag, id, h, now, wake)
  local set = tag .. ':$DEPENDANTS:' .. id
  for _, member in ipairs(redis.call('SMEMBERS', set)) do
    local did, g = string.match(member, '^(.*)@(%d+)$$')
    if not did then did = member end  -- (a registration without a generation)
    local dq = redis.call('HGET', IDX, did)
    if dq then
      local dtag = qtag(dq)
      local dh = dtag .. ':$TASK:' .. did
      local f = redis.call('HMGET', dh, 'wt', 's', 'p', 'rm', 'pr', 'e', 'c', 'dg')
      local wt = tonumber(f[1])
      if wt and wt > 0 and f[8] == g then  -- (another generation: an earlier task of that id registered)
        redis.call('HSET', dh, 'wt', wt - 1)
        if wt == 1 and f[2] == 'pending' and f[3] ~= '1' then
          local t = tonumber(f[7])
          if f[6] and f[6] ~= '' then t = tonumber(f[6]) end
          wake[dtag] = (wake[dtag] or 0) + make_ready(dtag, did, f[4], f[5], t, now)
        end
      end
    end
  end
  redis.call('DEL', set)
  redis.call('HDEL', h, 'dn')
end
""",
    ),
]

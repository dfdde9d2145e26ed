"""Lua of enqueue: the general script (any tasks, one queue) and the common single task's.

Substituted names (``$READY``...) and helpers (``qtag``, ``now_us``...) come from
:mod:`omniq_redis.scripts`, which assembles and loads every script.
"""

from __future__ import annotations

__all__ = ["ENQUEUE", "ENQUEUE_ONE"]

# ARGV: P, queue, msgpack array of [id, blob, priority, eta µs or '', created µs, unique key or '',
# paused '1'/'0', attempts, max_retries, READY member, and only for a task with limits or
# dependencies: [limit key, concurrency, rate, burst] ('' for None) or false without limits, and
# only for a task with dependencies: its depends_on ids, without repeats], '1' to register the
# queue in QUEUES (the client sends it on its first enqueue to a queue) or '0'. One ARGV for all
# the tasks keeps the client's argument packing off the hot path. The client builds the READY member
# "<ready time (eta or created, at least 0):016><seq:012>:<id>" with its own sequence number, which
# only orders its tasks due in the same microsecond: the script formats no numbers. The hash gets
# only the fields the blob cannot answer (see task_from_row: an absent field keeps the blob's
# value). Returns the stored (or existing) id per task; a finished task's id is stored anew, replacing it.
#
# Dependencies (Capability.DEPENDENCIES): a task with depends_on is registered in the DEPENDANTS set
# of each of them that is stored and PENDING or RUNNING (which gets the mark 'dn'), in this queue or
# another, and stored with 'wt' = how many; those earlier in the same call are stored already, so
# they count. While 'wt' > 0 it stays out of READY and DELAYED: the step that ends its last
# dependency puts it there (release_dependants). A task without depends_on takes none of this.
ENQUEUE = r"""
-- {queue tag, status, unique key} of the task id when it is finished (terminal), else nil
local function finished(id)
  local tag = qtag(redis.call('HGET', IDX, id))
  local f = redis.call('HMGET', tag .. ':$TASK:' .. id, 's', 'uk')
  if f[1] == 'succeeded' or f[1] == 'failed' or f[1] == 'cancelled' or f[1] == 'expired' then
    return {tag, f[1], f[2]}
  end
  return nil
end
-- register task id (generation g) as waiting on those of deps that are stored and not terminal; how
-- many. Runs before the task's own hash is written, so a task listing itself does not wait on itself.
local function wait_on(id, g, deps)
  local n = 0
  for _, dep in ipairs(deps) do
    local dq = redis.call('HGET', IDX, dep)
    if dq then
      local dtag = qtag(dq)
      local dh = dtag .. ':$TASK:' .. dep
      local s = redis.call('HGET', dh, 's')
      if s == 'pending' or s == 'running' then
        redis.call('SADD', dtag .. ':$DEPENDANTS:' .. dep, id .. '@' .. g)
        redis.call('HSET', dh, 'dn', '1')
        n = n + 1
      end
    end
  end
  return n
end
local now = nil  -- the server clock, read only when a task has an eta to compare with it
local q = ARGV[2]
local tag = qtag(q)
local out = {}
local nready = 0
if ARGV[4] == '1' then redis.call('SADD', '{' .. P .. '}:$QUEUES', q) end
for _, it in ipairs(cmsgpack.unpack(ARGV[3])) do
  local id, blob, pr, eta, c, uk, paused, attempts, mr, rm, lim, deps = unpack(it)
  local result = id
  -- claims the id in the index (id -> queue) and detects a duplicate id in one call
  local dup = redis.call('HSETNX', IDX, id, q) == 0
  -- a finished task's id: that task is replaced (BaseTaskQueue.retry's default relies on it), a live one's kept
  local stale = dup and finished(id)
  if stale then dup = false end
  if not dup and uk ~= '' then
    local other = unique_holder(uk)
    if other then
      dup = true
      result = other
      if not stale then redis.call('HDEL', IDX, id) end  -- not stored after all
    end
  end
  if stale and not dup then
    redis.call('ZREM', stale[1] .. ':$STATUS:' .. stale[2], id)
    release_unique(stale[3], id)
    redis.call('DEL', stale[1] .. ':$TASK:' .. id)
    redis.call('HSET', IDX, id, q)
  end
  if not dup then
    local h = tag .. ':$TASK:' .. id
    local wt = 0
    local g = nil
    if deps then
      g = redis.call('INCR', '{' .. P .. '}:$DEPGEN')
      wt = wait_on(id, g, deps)
    end
    redis.call('HSET', h, 'b', blob, 's', 'pending', 'c', c, 'pr', pr, 'mr', mr, 'rm', rm)
    if wt > 0 then redis.call('HSET', h, 'wt', wt) end
    if g then redis.call('HSET', h, 'dg', g) end
    if uk ~= '' then
      redis.call('HSET', UNIQ, uk, id)
      redis.call('HSET', h, 'uk', uk)
    end
    if eta ~= '' then redis.call('HSET', h, 'e', eta) end  -- set_paused reads it on resume
    if paused == '1' then redis.call('HSET', h, 'p', '1') end
    if attempts ~= '0' then redis.call('HSET', h, 'a', attempts) end  -- claim increments it
    if lim then redis.call('HSET', h, 'lk', lim[1], 'lc', lim[2], 'lr', lim[3], 'lb', lim[4]) end
    redis.call('ZADD', tag .. ':$STATUS:pending', c, id)
    if paused ~= '1' and wt == 0 then
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

# The common single enqueue: one task with no unique key, no eta, not paused, no earlier attempt,
# no limits and no dependencies, into a queue its client has registered. Same effects as ENQUEUE
# for such a task, without its msgpack, loop, helpers and key building: about 14 µs less server
# time per call here (benchmarks/redis_enqueue_cost.py). KEYS: id index, task hash, pending-status
# zset, READY, signal list. ARGV: id, queue, blob, priority, -priority, created µs, max_retries,
# READY member.
# Returns 1 when stored, 0 when the id exists already (nothing written).
ENQUEUE_ONE = r"""
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'b', ARGV[3], 's', 'pending', 'c', ARGV[6], 'pr', ARGV[4], 'mr', ARGV[7], 'rm', ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[8])
if redis.call('LLEN', KEYS[5]) < $SIGNAL_CAP then redis.call('LPUSH', KEYS[5], '1') end
return 1
"""

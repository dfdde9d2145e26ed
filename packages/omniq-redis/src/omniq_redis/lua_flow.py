"""Lua of flow control (:mod:`omniq.flow_control`'s rules at claim) and queue pause.

Only a task with limits carries the hash fields ``lk`` / ``lc`` / ``lr`` / ``lb``
(see :mod:`omniq_redis.keys`): the claim, extend, finish, cancel, recover and
purge scripts already read the task's hash with one HMGET, which also asks
for ``lk``, and call these helpers only when it is set. An unlimited task
takes the path it always took.

Per limit key ``k`` (keys shared by every queue, so a limit holds across
queues, processes and hosts): the holders zset ``{P}:fl:h:<k>`` (score: lease
deadline), the held zset ``{P}:fl:w:<k>`` (member: the READY member, so the
first is the first in claim order) and the rate's ``tat`` string
``{P}:fl:t:<k>``. A parked task sits in DELAYED at its eta with ``hd`` or
``rr`` set; a held task is due at the earliest holder's lease deadline, so a
killed worker's slot comes back without recovery.

One claim admits at most half of a concurrency limit of 4 or more (rounded
up: :func:`omniq.flow_control.claim_share`, said again in Lua); the rest
stays in READY, at its place, for the next claim, often another worker's.
The server runs one script at a time, so a key's slots taken by one
claim go round one batch at a time; shared between workers, one worker's
claim and finish overlap another's run. A drain of 20,000 no-op tasks under
``concurrency_limit=50`` (``benchmarks/flow_control.py``, two worker
processes, 3 rounds) went from 4,166 to 6,351 tasks/s with it (0.40 to 0.54 of
the unlimited drain).

A finish that claims (``finish_and_claim``: the finish script, then the claim
script, in one pipeline) hands the slots it frees over (``hand_over``): each
goes to its key's first held task when that task is in the claimed queue,
leased in the finish script itself, one write, where a wake-up to READY and
the claim's pop and admit took two; the claim behind it then takes nothing, so
two workers sharing a key each keep their share. Slots not handed over wake
held tasks, with wake-up tokens, for the other claimers. In a drain of 20,000
tasks under ``concurrency_limit=50`` (two workers, ``INFO commandstats``
around the drain), 17,150 of the 17,225 tasks parked were handed over, and the
commands per task fell from 5.2 to 4.4 HMGET and 6.2 to 5.8 ZADD.
"""

from __future__ import annotations

__all__ = ["FLOW_HELPERS", "SET_QUEUE_PAUSED"]

#: helpers the scripts may name, appended to :data:`omniq_redis.lua_common.HELPERS` (same rules).
FLOW_HELPERS: list[tuple[str, str]] = [
    (
        "FL",
        r"""
local FL = '{' .. P .. '}:$FLOW:'
""",
    ),
    (
        "PAUSED",
        r"""
local PAUSED = '{' .. P .. '}:$PAUSED'
""",
    ),
    (
        "FREED",
        r"""
-- set by a finish that hands the slots it frees over (finish_and_claim): limit key -> slots freed,
-- given out by hand_over once every outcome is recorded, instead of a wake-up each
local FREED = nil
""",
    ),
    (
        "wake_held",
        r"""
-- make the first task held for a slot of limit key lk (claim order) ready at its old place;
-- entries gone stale (claimed after its eta, cancelled, purged, moved) are dropped on the way
local function wake_held(lk)
  local w = FL .. 'w:' .. lk
  while true do
    local first = redis.call('ZPOPMIN', w)
    local rm = first[1]
    if not rm then return end
    local id = string.sub(rm, 30)
    local q = redis.call('HGET', IDX, id)
    if q then
      local tag = qtag(q)
      local h = tag .. ':$TASK:' .. id
      local f = redis.call('HMGET', h, 's', 'hd', 'rm', 'pr', 'p')
      if f[1] == 'pending' and f[2] == '1' and f[3] == rm then
        redis.call('HSET', h, 'hd', '', 'e', '')
        if f[5] ~= '1' then  -- a paused task stays out of READY: wake the next one instead
          redis.call('ZREM', tag .. ':$DELAYED', id)
          redis.call('ZADD', tag .. ':$READY', -tonumber(f[4]), rm)
          signal(tag, 1)
          return
        end
      end
    end
  end
end
""",
    ),
    (
        "release_slot",
        r"""
-- a task of limit key lk leaves RUNNING: if it held a slot, free it and wake one held task
local function release_slot(lk, id)
  if redis.call('ZREM', FL .. 'h:' .. lk, id) == 1 then
    if FREED then FREED[lk] = (FREED[lk] or 0) + 1 else wake_held(lk) end
  end
end
""",
    ),
    (
        "hand_over",
        r"""
-- the slots in FREED go to their keys' first held tasks of queue q, leased to the finishing worker:
-- one write each, where a wake-up to READY and the claim's pop and admit took two. Per key, while its
-- first held task is q's, not paused and without a rate limit, at most a claim's share of the limit
-- (as admit) and `want` in all; the key's other slots wake held tasks as release_slot does. A holder
-- count never grows: a key gets back at most the slots it gave up. Returns the leased tasks' ROWs.
local function hand_over(q, want, lease, worker, base, now)
  local out = {}
  local tag = qtag(q)
  local open = redis.call('SISMEMBER', PAUSED, q) == 0
  local deadline, at = fmt(now + lease), fmt(now)
  local lks = {}
  for lk in pairs(FREED) do lks[#lks + 1] = lk end
  table.sort(lks)
  for _, lk in ipairs(lks) do
    local n, taken = FREED[lk], 0
    local w = FL .. 'w:' .. lk
    while open and n > 0 and #out < want do
      local rm = redis.call('ZRANGE', w, 0, 0)[1]
      if not rm then break end
      local id = string.sub(rm, 30)
      if redis.call('HGET', IDX, id) ~= q then break end  -- another queue's (or gone): woken below
      local h = tag .. ':$TASK:' .. id
      local f = redis.call('HMGET', h, 's', 'hd', 'rm', 'p', 'lr', 'lc', 'c')
      if f[1] ~= 'pending' or f[2] ~= '1' or f[3] ~= rm then
        redis.call('ZREM', w, rm)  -- a stale entry, dropped as wake_held drops it
      else
        local lc = tonumber(f[6])
        if f[4] == '1' or tonumber(f[5]) or (lc >= 4 and taken >= math.ceil(lc / 2)) then break end
        redis.call('ZREM', w, rm)
        redis.call('ZREM', tag .. ':$DELAYED', id)
        redis.call('HINCRBY', h, 'a', 1)
        redis.call('HSET', h, 's', 'running', 'k', base .. (#out + 1), 'l', deadline, 'w', worker, 'sa', at,
          'ua', at, 'hd', '', 'e', '')
        redis.call('ZADD', tag .. ':$LEASES', deadline, id)
        redis.call('ZREM', tag .. ':$STATUS:pending', id)
        redis.call('ZADD', tag .. ':$STATUS:running', f[7], id)
        redis.call('ZADD', FL .. 'h:' .. lk, deadline, id)
        out[#out + 1] = row(h)
        taken, n = taken + 1, n - 1
      end
    end
    for _ = 1, n do wake_held(lk) end
  end
  return out
end
""",
    ),
    (
        "HOLDING",
        r"""
local HOLDING = {}
local TAKEN = {}
""",
    ),
    (
        "admit",
        r"""
-- flow control for a limited candidate of claim (omniq.flow_control's rules): true when the claim
-- takes it (it becomes a holder of its key when it has a concurrency limit); else it is parked in
-- DELAYED at its eta, held for a slot (hd) or with its rate slot reserved (rr), and false
local function admit(tag, id, h, rm, lk, now, deadline)
  local f = redis.call('HMGET', h, 'lc', 'lr', 'lb', 'rr', 'pr', 'hd')
  local lc, lr = tonumber(f[1]), tonumber(f[2])
  local eta, held = nil, false
  if lc then
    local holders = FL .. 'h:' .. lk
    local after = '(' .. fmt(now)
    -- counted once per key and script, then kept in step with the holders this script adds
    HOLDING[lk] = HOLDING[lk] or redis.call('ZCOUNT', holders, after, '+inf')
    TAKEN[lk] = TAKEN[lk] or 0
    -- one claim takes at most half of a limit of 4 or more (see the module's docstring)
    if lc >= 4 and TAKEN[lk] >= math.ceil(lc / 2) and HOLDING[lk] < lc then return 'skip' end
    if HOLDING[lk] >= lc then
      local first = redis.call('ZRANGE', holders, after, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
      eta, held = tonumber(first[2]), true
    end
  end
  if not held and lr and f[4] ~= '1' then
    local tk = FL .. 't:' .. lk
    local start = math.max(tonumber(redis.call('GET', tk) or 0), now)
    local interval = 1000000 / lr
    local allowed = start - (tonumber(f[3]) - 1) * interval
    local tat = start + interval
    -- once past, a tat says nothing (max(tat, now) = now): it expires a second later
    redis.call('SET', tk, fmt(tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    if now < allowed - 1 then eta = allowed end  -- a microsecond of slack, as admit() has
  end
  if eta == nil then
    if f[4] == '1' or f[6] == '1' then redis.call('HDEL', h, 'rr', 'hd') end
    if lc then
      redis.call('ZADD', FL .. 'h:' .. lk, deadline, id)
      HOLDING[lk] = HOLDING[lk] + 1
      TAKEN[lk] = TAKEN[lk] + 1
      -- held before and due at its eta (a woken task has left the held set already)
      if f[6] == '1' then redis.call('ZREM', FL .. 'w:' .. lk, rm) end
    end
    return true
  end
  eta = math.max(eta, now + 1000)  -- after now: not ready again in this claim
  redis.call('ZADD', tag .. ':$DELAYED', eta, id)
  if held then
    redis.call('HSET', h, 'e', fmt(eta), 'hd', '1', 'rr', '')
    redis.call('ZADD', FL .. 'w:' .. lk, -tonumber(f[5]), rm)
  else
    redis.call('HSET', h, 'e', fmt(eta), 'rr', '1')
  end
  return false
end
""",
    ),
]

# ARGV: P, queue, '1' to pause / '0' to resume. A resume leaves a wake-up token, so a worker
# blocked on the queue's signal list claims what the pause kept back.
SET_QUEUE_PAUSED = r"""
if ARGV[3] == '1' then
  redis.call('SADD', PAUSED, ARGV[2])
elseif redis.call('SREM', PAUSED, ARGV[2]) == 1 then
  signal(qtag(ARGV[2]), 1)
end
return 1
"""

"""Lua of the lease state machine: claim, extend, finish (with fused results) and recover.

Substituted names (``$READY``...) and helpers (``qtag``, ``now_us``...) come from
:mod:`omniq_redis.scripts`, which assembles and loads every script.
"""

from __future__ import annotations

__all__ = ["CLAIM", "EXTEND", "FINISH", "RECOVER"]

# ARGV: P, queue, limit, lease µs, worker id, token base[, a finish's token base: claim nothing when
# that finish handed tasks over, see FINISH]. Returns {ROWs of the claimed tasks,
# µs until the queue's next delayed eta or -1}. Leaves a wake-up token exactly when READY is not
# empty, so a worker may block on the signal list right after a claim without missing work.
# A paused queue (in PAUSED) claims nothing, drops its tokens and reports no eta: its resume
# leaves a token. A task with limits ('lk' set) passes admit (lua_flow), is parked in DELAYED or,
# past its key's share of one claim, goes back to READY,
# and the claim pops again for the places parked tasks left (at most $PARK_CAP parked per call);
# without a parked task the claim pops once, as it always did.
CLAIM = r"""
if ARGV[7] and redis.call('DEL', FL .. 'x:' .. ARGV[7]) == 1 then return {{}, -1} end
local now = now_us()
local tag = qtag(ARGV[2])
if redis.call('SISMEMBER', PAUSED, ARGV[2]) == 1 then
  redis.call('DEL', tag .. ':$SIGNAL')
  return {{}, -1}
end
local ready, delayed = tag .. ':$READY', tag .. ':$DELAYED'
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local f = redis.call('HMGET', tag .. ':$TASK:' .. id, 'rm', 'pr')
  if f[1] then redis.call('ZADD', ready, -tonumber(f[2]), f[1]) end
end
if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end
local want = tonumber(ARGV[3])
local deadline = fmt(now + tonumber(ARGV[4]))
local out = {}
local n, parked = 0, 0
repeat
  local asked = want - #out
  local popped = redis.call('ZPOPMIN', ready, asked)
  local parked_now = 0
  for i = 1, #popped, 2 do
    local id = string.sub(popped[i], 30)
    local h = tag .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 's', 'c', 'lk')
    if f[1] == 'pending' then
      local verdict = (not f[3]) or admit(tag, id, h, popped[i], f[3], now, deadline)
      if verdict == 'skip' then  -- its key's share of this claim is taken: back to its place
        redis.call('ZADD', ready, popped[i+1], popped[i])
      elseif verdict then
        n = n + 1
        redis.call('HINCRBY', h, 'a', 1)
        redis.call('HSET', h, 's', 'running', 'k', ARGV[6] .. n, 'l', deadline, 'w', ARGV[5], 'sa', fmt(now), 'ua', fmt(now))
        redis.call('ZADD', tag .. ':$LEASES', deadline, id)
        redis.call('ZREM', tag .. ':$STATUS:pending', id)
        redis.call('ZADD', tag .. ':$STATUS:running', f[2], id)
        out[#out + 1] = row(h)
      else
        parked_now = parked_now + 1
      end
    end
  end
  parked = parked + parked_now
until parked_now == 0 or #out >= want or #popped < 2 * asked or parked >= $PARK_CAP
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
EXTEND = r"""
local now = now_us()
local deadline = fmt(now + tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local q = redis.call('HGET', IDX, id)
  if q then
    local h = qtag(q) .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 's', 'k', 'lk')
    if f[1] == 'running' and f[2] == ARGV[i+1] then
      redis.call('HSET', h, 'l', deadline, 'ua', fmt(now))  -- a heartbeat updates the record
      redis.call('ZADD', qtag(q) .. ':$LEASES', deadline, id)
      if f[3] then redis.call('ZADD', FL .. 'h:' .. f[3], 'XX', deadline, id) end  -- a holder keeps its slot
      out[#out + 1] = id
    end
  end
end
return out
"""

# ARGV: P, result prefix ('' = results not fused), msgpack array of [id, token, kind, eta µs or '',
# error blob or '', result blob or '', result expiry ms or '']. Returns 1/0 per outcome. With five
# more (finish_and_claim: the claimed queue, the most tasks to lease, lease µs, worker id, token base),
# the slots the outcomes free are handed over (hand_over) once all are recorded, and the reply is
# {1/0 per outcome, ROWs of the tasks leased}; when some were, the key FL x:<token base> tells the
# claim behind it in the pipeline to take nothing (the slots left woke tasks for other claimers). Tasks that
# reach SUCCEEDED or FAILED are counted per queue and minute (count_done, for queue_stats). A task
# reaching a terminal status with dependants ('dn', read in the same HMGET) counts them down
# (release_dependants), waking their queues with the others; RETRY, RELEASE and RESCHEDULE are not
# ends.
FINISH = r"""
local now = now_us()
local RP = ARGV[2]
local HAND = ARGV[4]
if HAND then FREED = {} end
local out = {}
local wake = {}
local done = {}
for _, it in ipairs(cmsgpack.unpack(ARGV[3])) do
  local id, tok, kind, eta, err, res, pxat = unpack(it)
  local ok = 0
  local q = redis.call('HGET', IDX, id)
  if q then
    local tag = qtag(q)
    local h = tag .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 's', 'k', 'c', 'uk', 'pr', 'p', 'a', 'lk', 'dn')
    if f[1] == 'running' and f[2] == tok then
      ok = 1
      redis.call('ZREM', tag .. ':$LEASES', id)
      redis.call('ZREM', tag .. ':$STATUS:running', id)
      if f[8] then release_slot(f[8], id) end
      if kind == 'succeeded' or kind == 'failed' or kind == 'expired' then
        redis.call('HSET', h, 's', kind, 'k', '', 'l', '', 'fa', fmt(now), 'ua', fmt(now), 'er', err)
        redis.call('ZADD', tag .. ':$STATUS:' .. kind, f[3], id)
        release_unique(f[4], id)
        if kind ~= 'expired' then done[tag] = (done[tag] or 0) + 1 end
        if f[9] then release_dependants(tag, id, h, now, wake) end
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
for tag, n in pairs(done) do count_done(tag, n, now) end
if HAND then
  local handed = hand_over(HAND, tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8], now)
  if #handed > 0 then redis.call('SET', FL .. 'x:' .. ARGV[8], '1', 'PX', 60000) end
  return {out, handed}
end
return out
"""

# ARGV: P, queue, limit. Returns one ROW per recovered task (as it is now). A task failed out of
# attempts ends: its dependants are counted down (release_dependants, when it has 'dn').
RECOVER = r"""
local now = now_us()
local tag = qtag(ARGV[2])
local leases = tag .. ':$LEASES'
local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
local nready = 0
local nfailed = 0
local wake = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', leases, id)
  local h = tag .. ':$TASK:' .. id
  local f = redis.call('HMGET', h, 's', 'a', 'mr', 'c', 'uk', 'pr', 'p', 'l', 'lk', 'dn')
  if f[1] == 'running' and tonumber(f[8]) <= now then
    redis.call('ZREM', tag .. ':$STATUS:running', id)
    if f[9] then release_slot(f[9], id) end
    local a = tonumber(f[2])
    if a >= tonumber(f[3]) + 1 then
      local err = cmsgpack.pack({type = 'LeaseExpired', traceback = '', attempt = a, retryable = false,
        message = 'the worker holding attempt ' .. a .. ' stopped renewing its lease'})
      redis.call('HSET', h, 's', 'failed', 'k', '', 'l', '', 'fa', fmt(now), 'ua', fmt(now), 'er', err)
      redis.call('ZADD', tag .. ':$STATUS:failed', f[4], id)
      release_unique(f[5], id)
      nfailed = nfailed + 1
      if f[10] then release_dependants(tag, id, h, now, wake) end
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
for t, n in pairs(wake) do signal(t, n) end
count_done(tag, nfailed, now)
return out
"""

"""Lua of single-task control and inspection: cancel, pause / resume, get, purge.

Substituted names (``$READY``...) and helpers (``qtag``, ``now_us``...) come from
:mod:`omniq_redis.scripts`, which assembles and loads every script.
"""

from __future__ import annotations

__all__ = ["CANCEL", "GET", "PURGE", "SET_PAUSED"]

# ARGV: P, id. Returns 1 when the task was cancelled (its dependants counted down, see
# release_dependants).
CANCEL = r"""
local now = now_us()
local id = ARGV[2]
local tag, h = task_at(id)
if not tag then return 0 end
local f = redis.call('HMGET', h, 's', 'rm', 'c', 'uk', 'lk', 'dn')
if f[1] ~= 'pending' and f[1] ~= 'running' then return 0 end
if f[5] then
  if f[1] == 'running' then release_slot(f[5], id) else redis.call('ZREM', FL .. 'w:' .. f[5], f[2]) end
end
redis.call('ZREM', tag .. ':$READY', f[2])
redis.call('ZREM', tag .. ':$DELAYED', id)
redis.call('ZREM', tag .. ':$LEASES', id)
redis.call('ZREM', tag .. ':$STATUS:' .. f[1], id)
redis.call('ZADD', tag .. ':$STATUS:cancelled', f[3], id)
redis.call('HSET', h, 's', 'cancelled', 'k', '', 'l', '', 'fa', fmt(now), 'ua', fmt(now))
release_unique(f[4], id)
if f[6] then
  local wake = {}
  release_dependants(tag, id, h, now, wake)
  for t, n in pairs(wake) do signal(t, n) end
end
return 1
"""

# ARGV: P, id, '1' to pause / '0' to resume. Returns 1 when the task exists and is not terminal.
# Pause and dependencies are independent: a resumed task still waiting on some ('wt' > 0) stays out
# of READY, for the end of its last dependency to put it there.
SET_PAUSED = r"""
local now = now_us()
local id = ARGV[2]
local tag, h = task_at(id)
if not tag then return 0 end
local f = redis.call('HMGET', h, 's', 'p', 'rm', 'pr', 'e', 'wt')
if f[1] ~= 'pending' and f[1] ~= 'running' then return 0 end
redis.call('HSET', h, 'p', ARGV[3], 'ua', fmt(now))
if f[1] == 'pending' then
  if ARGV[3] == '1' then
    redis.call('ZREM', tag .. ':$READY', f[3])
    redis.call('ZREM', tag .. ':$DELAYED', id)
  elseif f[2] == '1' and (tonumber(f[6]) or 0) == 0 then
    local t = now
    if f[5] and f[5] ~= '' then t = tonumber(f[5]) end
    signal(tag, make_ready(tag, id, f[3], f[4], t, now))
  end
end
return 1
"""

# ARGV: P, ids... Returns a ROW per id, or 0 for an unknown id.
GET = r"""
local out = {}
for i = 2, #ARGV do
  local q = redis.call('HGET', IDX, ARGV[i])
  local r = q and row(qtag(q) .. ':$TASK:' .. ARGV[i])
  if r and r[1] then out[#out + 1] = r else out[#out + 1] = 0 end
end
return out
"""

# ARGV: P, queue, batch size, statuses... Deletes up to a batch per status; returns how many. A
# deleted task with dependants ('dn') counts them down first (release_dependants), which deletes its
# DEPENDANTS set; a dependant deleted while waiting is skipped by the end of its dependency.
PURGE = r"""
local tag = qtag(ARGV[2])
local n = 0
local now = nil  -- the server clock, read only to ready a dependant
local wake = {}
for s = 4, #ARGV do
  local st = tag .. ':$STATUS:' .. ARGV[s]
  local ids = redis.call('ZRANGE', st, 0, tonumber(ARGV[3]) - 1)
  for _, id in ipairs(ids) do
    local h = tag .. ':$TASK:' .. id
    local f = redis.call('HMGET', h, 'rm', 'uk', 'lk', 's', 'dn')
    if f[1] then redis.call('ZREM', tag .. ':$READY', f[1]) end
    if f[3] then
      redis.call('ZREM', FL .. 'w:' .. f[3], f[1])
      if f[4] == 'running' then release_slot(f[3], id) end
    end
    release_unique(f[2], id)
    if f[5] then
      if now == nil then now = now_us() end
      release_dependants(tag, id, h, now, wake)
    end
    redis.call('ZREM', tag .. ':$DELAYED', id)
    redis.call('ZREM', tag .. ':$LEASES', id)
    redis.call('ZREM', st, id)
    redis.call('HDEL', IDX, id)
    redis.call('DEL', h)
    n = n + 1
  end
end
for t, c in pairs(wake) do signal(t, c) end
return n
"""

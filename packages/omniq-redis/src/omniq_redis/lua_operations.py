"""Lua of the operator's calls: a page of tasks, the queues' statistics, and retry.

Substituted names (``$READY``...) and helpers (``qtag``, ``now_us``...) come from
:mod:`omniq_redis.scripts`, which assembles and loads every script.
"""

from __future__ import annotations

__all__ = ["LIST_PAGE", "QUEUE_STATS", "RETRY"]

# ARGV: P, limit, lowest created µs ('-inf' or since), highest (an exclusive '(until', the cursor's
# created µs, or '+inf'), the cursor's created µs or '' and its id, the msgpack of "func" and the
# wanted name or '' (no filter), a queue or '' (every queue in QUEUES), then the statuses.
# Walks each per-status zset newest first (ZRANGE BYSCORE REV, score created_at µs, ties by member,
# descending) and takes up to limit matching members of each; merges them and returns the ROWs of
# the newest limit. The cursor's ties (same created_at) count only when their id is smaller.
# Without a func filter each zset costs one ZRANGE of limit members (a few more past cursor ties);
# with one, the blobs of the members it passes are read until limit of them match.
LIST_PAGE = r"""
local limit = tonumber(ARGV[2])
local lo, hi, tie, tie_id, fn, q = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
-- byte order, as Redis orders members (Lua's < on strings follows the server's locale)
local function before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- whether a task envelope's func is the wanted one: the map header, "id" and its value, then
-- "func" and its value must be the bytes fn holds (the envelope's fields are in declaration order)
local function func_is(blob)
  if not blob then return false end
  local b, i = string.byte(blob, 1) or 0, 0
  if b >= 0x80 and b <= 0x8f then i = 2 elseif b == 0xde then i = 4 elseif b == 0xdf then i = 6 else return false end
  if string.sub(blob, i, i + 2) ~= '\162id' then return false end
  i = i + 3
  local h, n = string.byte(blob, i) or 0, 0
  if h >= 0xa0 and h <= 0xbf then n = h - 0xa0; i = i + 1
  elseif h == 0xd9 then n = string.byte(blob, i + 1) or 0; i = i + 2
  elseif h == 0xda then n = (string.byte(blob, i + 1) or 0) * 256 + (string.byte(blob, i + 2) or 0); i = i + 3
  else return false end
  i = i + n
  return string.sub(blob, i, i + #fn - 1) == fn
end
local queues = {q}
if q == '' then queues = redis.call('SMEMBERS', '{' .. P .. '}:$QUEUES') end
local batch = limit
if fn ~= '' then batch = math.max(limit, 200) end
local found = {}
for _, name in ipairs(queues) do
  local tag = qtag(name)
  for s = 9, #ARGV do
    local key = tag .. ':$STATUS:' .. ARGV[s]
    local taken, offset = 0, 0
    while taken < limit do
      local got = redis.call('ZRANGE', key, hi, lo, 'BYSCORE', 'REV', 'LIMIT', offset, batch, 'WITHSCORES')
      for i = 1, #got, 2 do
        local id, score = got[i], tonumber(got[i + 1])
        if taken < limit and not (score == tie and not before(id, tie_id)) then
          local h = tag .. ':$TASK:' .. id
          if fn == '' or func_is(redis.call('HGET', h, 'b')) then
            found[#found + 1] = {score, id, h}
            taken = taken + 1
          end
        end
      end
      if #got < 2 * batch then break end
      offset = offset + batch
    end
  end
end
table.sort(found, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return before(b[2], a[2])
end)
local out = {}
for i = 1, math.min(limit, #found) do out[i] = row(found[i][3]) end
return out
"""

# ARGV: P, minutes of history, then the statuses. Returns, per queue holding tasks (sorted by name): {queue, a count per
# status (ARGV's order), µs since the oldest ready task became ready or -1, the completions of each
# of the last minutes (oldest first, the current one last; false for none)}. The oldest ready task is the earliest
# READY member of each priority (READY sorts by priority, then ready time: one ZRANGE per distinct
# priority) or a DELAYED task already due (claim has not moved it yet).
QUEUE_STATS = r"""
local now = now_us()
local minute = math.floor(now / 60000000)
local minutes = tonumber(ARGV[2])
local queues = redis.call('SMEMBERS', '{' .. P .. '}:$QUEUES')
table.sort(queues)
local out = {}
for _, q in ipairs(queues) do
  local tag = qtag(q)
  local counts, total = {}, 0
  for s = 3, #ARGV do
    local n = redis.call('ZCARD', tag .. ':$STATUS:' .. ARGV[s])
    counts[#counts + 1] = n
    total = total + n
  end
  if total > 0 then
    local oldest = nil
    local ready = tag .. ':$READY'
    local head = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
    while head[1] do
      local t = tonumber(string.sub(head[1], 1, 16))
      if t and (oldest == nil or t < oldest) then oldest = t end
      head = redis.call('ZRANGE', ready, '(' .. head[2], '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    end
    local due = redis.call('ZRANGE', tag .. ':$DELAYED', 0, 0, 'WITHSCORES')
    if due[2] then
      local t = tonumber(due[2])
      if t <= now and (oldest == nil or t < oldest) then oldest = t end
    end
    local age = -1
    if oldest ~= nil then age = math.max(now - oldest, 0) end
    local done = {}
    for m = minute - minutes + 1, minute do done[#done + 1] = tag .. ':$DONE:' .. fmt(m) end
    out[#out + 1] = {q, counts, fmt(age), redis.call('MGET', unpack(done))}
  end
end
return out
"""

# ARGV: P, id. A FAILED, CANCELLED or EXPIRED task becomes PENDING and ready with a fresh attempt
# budget, placed in READY by its created_at (as when it was enqueued without an eta); its unique
# key is taken again unless another live task holds it. A task still waiting on dependencies
# ('wt' > 0: cancelled while it waited) stays out of READY until they end, as at enqueue.
# Returns the task's ROW, or 0 when it is unknown, in another status, or its key is held.
RETRY = r"""
local now = now_us()
local id = ARGV[2]
local tag, h = task_at(id)
if not tag then return 0 end
local f = redis.call('HMGET', h, 's', 'c', 'uk', 'pr', 'wt')
if f[1] ~= 'failed' and f[1] ~= 'cancelled' and f[1] ~= 'expired' then return 0 end
local uk = f[3]
if uk and uk ~= '' then
  if unique_holder(uk) then return 0 end  -- not this task: it is not live
  redis.call('HSET', UNIQ, uk, id)
end
local rm = member(tag, tonumber(f[2]), id)
redis.call('ZREM', tag .. ':$STATUS:' .. f[1], id)
redis.call('ZADD', tag .. ':$STATUS:pending', f[2], id)
redis.call('HSET', h, 's', 'pending', 'e', '', 'p', '0', 'a', '0', 'k', '', 'l', '', 'w', '', 'sa', '', 'fa', '',
  'ua', fmt(now), 'er', '', 'rm', rm)
redis.call('HDEL', h, 'hd', 'rr')  -- flow control's marks, left by a cancel while parked
if (tonumber(f[5]) or 0) == 0 then
  redis.call('ZADD', tag .. ':$READY', -tonumber(f[4]), rm)
  signal(tag, 1)
end
return row(h)
"""

"""Lua of the event stream: append a batch of events and cap the stream.

Substituted names (``$READY``...) and helpers (``qtag``, ``now_us``...) come from
:mod:`omniq_redis.scripts`, which assembles and loads every script.
"""

from __future__ import annotations

__all__ = ["APPEND_EVENTS"]

# KEYS: stream. ARGV: P, maxlen, min id ms or '', then timestamp ms, blob pairs. The entry id is
# the event's own time when that keeps ids increasing, else the server's (always >= the event's).
# The cap is applied once per call, not per XADD (a MAXLEN on every XADD costs about 20% more).
APPEND_EVENTS = r"""
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

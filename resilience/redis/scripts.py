"""The Lua scripts: each check or state change is one atomic script, one round trip.

Both scripts take Redis ``TIME`` as the clock (one clock for every process; Redis 5+
replicates script effects, so a non-deterministic clock read is allowed), and keep
every key of one primitive under one hash tag ``{name}`` (one Redis Cluster slot).
Floats cross the boundary as strings: Lua numbers are truncated to integers in
replies, and ``tostring`` keeps only 14 digits.
"""

from __future__ import annotations

__all__ = ["BREAKER", "TOKEN_BUCKET", "TOKEN_LEASE"]

# The refill both token scripts share, composed into each (one copy of the arithmetic).
# Reads capacity (ARGV[1]) and rate (ARGV[2], tokens/s); expects the local now_arg (the
# ARGV index of the caller's clock). Defines now (microseconds), level (the bucket's
# tokens now, refilled and capped), take(tokens, granted, ttl_ms) (takes and stores
# them; replies {granted, level after}) and refuse() (replies {0, level}).
_REFILL = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now
if ARGV[now_arg] ~= nil and ARGV[now_arg] ~= '' then
  now = tonumber(ARGV[now_arg])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local level = capacity
if state[1] then
  local elapsed = now - tonumber(state[2])
  if elapsed < 0 then elapsed = 0 end
  level = tonumber(state[1]) + elapsed * rate / 1000000
  if level > capacity then level = capacity end
end
local function take(tokens, granted, ttl)
  level = level - tokens
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', level),
             'ts', string.format('%.0f', now))
  -- An idle bucket refills to full within the TTL; a missing key is a full bucket.
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {granted, string.format('%.17g', level)}
end
local function refuse()
  -- Refused (or a read): the stored (tokens, ts) pair still describes the bucket.
  return {0, string.format('%.17g', level)}
end
"""

TOKEN_BUCKET = (
    """
-- KEYS[1]: the bucket hash {tokens, ts (microseconds)}.
-- ARGV: capacity, rate (tokens/s), requested (0: only read), ttl (ms),
--       now (microseconds; empty: Redis TIME).
local requested = tonumber(ARGV[3])
local now_arg = 5
"""
    + _REFILL
    + """
if requested > 0 and level >= requested then return take(requested, 1, ARGV[4]) end
return refuse()
"""
)

TOKEN_LEASE = (
    """
-- The lease mode's reservation, on the same bucket hash as TOKEN_BUCKET (processes in
-- either mode can share a bucket).
-- KEYS[1]: the bucket hash {tokens, ts (microseconds)}.
-- ARGV: capacity, rate (tokens/s), need, want (>= need), ttl (ms),
--       now (microseconds; empty: Redis TIME).
-- Takes min(want, floor(level)) tokens when level >= need, else nothing.
-- Returns {tokens taken, level after}.
local need = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local now_arg = 6
"""
    + _REFILL
    + """
if need > 0 and level >= need then
  local taken = math.min(want, math.floor(level))
  return take(taken, taken, ARGV[5])
end
return refuse()
"""
)

BREAKER = """
-- KEYS[1]: the breaker hash. ARGV: op, epoch, version, origin, failure_threshold,
-- success_threshold, timeout (ms), half_open_max_calls, trial lease (ms),
-- reason, target state, actor, note, channel, operator count.
-- Ops: state | fail | ok | trip | trial | due | trial_ok | trial_fail | release | set |
-- replay.
-- fail/ok/trip/trial_* /release only apply if (epoch, version) is the period the call
-- was admitted in: an outcome from before a transition must not change the new state
-- (nor free a permit of the new half-open period).
-- replay is a set queued during an outage: it applies only if no operator acted since
-- the sender last saw the state (same epoch and operator count `oc`, or a recreated
-- hash no operator has touched).
-- The first failure of a run (count 0 -> 1) and its reset (-> 0) are published without
-- a transition, so a success in any process resets the shared count.
-- Returns (and publishes on a transition) the state as JSON; op is true when the
-- latest transition was an operator action (it is an event even without a change).
local key = KEYS[1]
local op, epoch, version, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fthr, sthr = tonumber(ARGV[5]), tonumber(ARGV[6])
local timeout, maxt, lease = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%.0f', now)
local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local dirty = false
if h.s == nil then
  h = {s = 'closed', ep = t[1] .. '.' .. t[2], v = '0', f = '0', sc = '0', fl = '0',
       oa = '', ou = '0', hl = '0', tf = '0', r = 'state created in Redis', o = origin,
       a = '', n = '', op = '', oc = '0'}
  dirty = true
end
if h.oc == nil then h.oc = '0' end
local current = (epoch == h.ep and version == h.v)
local moved, granted, announce = false, 0, false

local function move(to, reason)
  h.tf = h.f
  h.v = tostring(tonumber(h.v) + 1)
  h.s, h.f, h.sc, h.fl, h.r, h.o, h.a, h.n, h.op = to, '0', '0', '0', reason, origin, '', '', ''
  if to == 'open' then
    h.oa, h.ou = nows, string.format('%.0f', now + timeout)
  elseif to == 'forced_open' then
    h.oa = nows
  elseif to ~= 'half_open' then
    h.oa = ''
  end
  moved, dirty = true, true
end

if op == 'fail' then
  if current and h.s == 'closed' then
    h.f = tostring(tonumber(h.f) + 1)
    dirty, announce = true, (h.f == '1')
    if tonumber(h.f) >= fthr then
      move('open', 'failure_threshold reached (' .. h.f .. ' consecutive failures)')
    end
  end
elseif op == 'ok' then
  if current and h.s == 'closed' and h.f ~= '0' then
    h.f, dirty, announce = '0', true, true
  end
elseif op == 'trip' then
  if current and h.s == 'closed' then move('open', ARGV[10]) end
elseif op == 'trial' then
  if h.s == 'open' and now >= tonumber(h.ou) then
    move('half_open', 'timeout elapsed (' .. ARGV[7] / 1000 .. 's open)')
  end
  if h.s == 'half_open' then
    -- Permits of a process that died mid-trial come back after the lease.
    if tonumber(h.fl) >= maxt and now - tonumber(h.hl) >= lease then h.fl = '0' end
    if tonumber(h.fl) < maxt then
      h.fl, h.hl, dirty, granted = tostring(tonumber(h.fl) + 1), nows, true, 1
    end
  elseif h.s == 'closed' or h.s == 'disabled' then
    granted = 1
  end
elseif op == 'due' then
  -- A state read: the lazy OPEN -> HALF_OPEN step, made once, by Redis's clock.
  if h.s == 'open' and now >= tonumber(h.ou) then
    move('half_open', 'timeout elapsed (' .. ARGV[7] / 1000 .. 's open)')
  end
elseif op == 'trial_ok' then
  if current and h.s == 'half_open' then
    if tonumber(h.fl) > 0 then h.fl = tostring(tonumber(h.fl) - 1) end
    h.sc, dirty = tostring(tonumber(h.sc) + 1), true
    if tonumber(h.sc) >= sthr then
      move('closed', 'success_threshold reached (' .. h.sc .. ' successful trial calls)')
    end
  end
elseif op == 'trial_fail' then
  if current and h.s == 'half_open' then move('open', ARGV[10]) end
elseif op == 'release' then
  if current and h.s == 'half_open' and tonumber(h.fl) > 0 then
    h.fl, dirty = tostring(tonumber(h.fl) - 1), true
  end
elseif op == 'set' or (op == 'replay' and ((epoch == h.ep and h.oc == ARGV[15]) or
                                           (epoch ~= h.ep and h.oc == '0'))) then
  move(ARGV[11], ARGV[10])
  h.a, h.n, h.op = ARGV[12], ARGV[13], '1'
  h.oc = tostring(tonumber(h.oc) + 1)
end

if dirty then
  redis.call('HSET', key, 's', h.s, 'ep', h.ep, 'v', h.v, 'f', h.f, 'sc', h.sc, 'fl', h.fl,
             'oa', h.oa, 'ou', h.ou, 'hl', h.hl, 'tf', h.tf, 'r', h.r, 'o', h.o,
             'a', h.a, 'n', h.n, 'op', h.op, 'oc', h.oc)
end
local remaining = 0
if h.s == 'open' then remaining = math.max(tonumber(h.ou) - now, 0) end
local reply = cjson.encode({
  s = h.s, ep = h.ep, v = tonumber(h.v), f = tonumber(h.f), sc = tonumber(h.sc),
  fl = tonumber(h.fl), tf = tonumber(h.tf), rem = remaining, oa = h.oa, r = h.r, o = h.o,
  a = h.a, n = h.n, g = granted, op = (h.op == '1'), moved = moved, oc = tonumber(h.oc)
})
if moved or announce then redis.call('PUBLISH', ARGV[14], reply) end
return reply
"""

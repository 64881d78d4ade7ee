-- A deployment's circuit breaker, shared by every replica.
-- KEYS[1]: state hash (open_until ms, win_start ms, calls, fails); KEYS[2]: probe lock.
-- ARGV: op (acquire | success | failure | abandon), was_probe (1/0), threshold, ratio ('' = none),
--       min_calls, window_ms, open_ms, probe_ttl_ms.
-- acquire replies closed | probe | open; success/failure reply the new state or '';
-- abandon frees the probe lock of a probe that ended without an outcome (cancelled).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local window = tonumber(ARGV[6])
local open_ms = tonumber(ARGV[7])
local keep = window + open_ms + tonumber(ARGV[8]) + 60000
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')

if op == 'acquire' then
  if open_until == 0 then return 'closed' end
  if now < open_until then return 'open' end
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[8]) then return 'probe' end
  return 'open'
end

if op == 'abandon' then
  redis.call('DEL', KEYS[2])
  return ''
end

if ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])
  if op == 'success' then
    redis.call('DEL', KEYS[1])
    return 'closed'
  end
  redis.call('HSET', KEYS[1], 'open_until', now + open_ms, 'win_start', now, 'calls', 0,
    'fails', 0)
  redis.call('PEXPIRE', KEYS[1], keep)
  return 'open'
end
if open_until ~= 0 then return '' end

local win_start = tonumber(redis.call('HGET', KEYS[1], 'win_start') or '0')
local calls, fails = 0, 0
if now - win_start < window then
  calls = tonumber(redis.call('HGET', KEYS[1], 'calls') or '0')
  fails = tonumber(redis.call('HGET', KEYS[1], 'fails') or '0')
else
  win_start = now
end
calls = calls + 1
if op == 'failure' then fails = fails + 1 end
local trips
if ARGV[4] ~= '' then
  trips = calls >= tonumber(ARGV[5]) and fails >= tonumber(ARGV[4]) * calls
else
  trips = fails >= tonumber(ARGV[3])
end
if op == 'failure' and trips then
  redis.call('HSET', KEYS[1], 'open_until', now + open_ms, 'win_start', now, 'calls', 0,
    'fails', 0)
  redis.call('PEXPIRE', KEYS[1], keep)
  return 'open'
end
redis.call('HSET', KEYS[1], 'win_start', win_start, 'calls', calls, 'fails', fails)
redis.call('PEXPIRE', KEYS[1], keep)
return ''

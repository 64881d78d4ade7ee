-- A deployment's circuit breaker and 429 cool-down, shared by every replica.
-- KEYS[1]: state hash (open_until ms, cool_until ms, win_start ms, calls, fails);
-- KEYS[2]: probe lock.
-- ARGV: op (acquire | success | failure | cool | abandon), was_probe (1/0), threshold
--       ('' = none), ratio ('' = none), min_calls, window_ms, open_ms, probe_ttl_ms,
--       extra (acquire, failure: successes this replica saw since it last reported;
--       cool: the cool-down in ms).
-- acquire replies {state, ms}: closed | probe | open (ms until the probe is due; 0 while
-- a probe is in flight) | cool (ms until the cool-down ends).
-- success/failure reply the new state or ''; cool and abandon reply ''.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local window = tonumber(ARGV[6])
local open_ms = tonumber(ARGV[7])
local extra = tonumber(ARGV[9] or '0')
local keep = window + open_ms + tonumber(ARGV[8]) + 60000
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')

local function window_counts()
  local win_start = tonumber(redis.call('HGET', KEYS[1], 'win_start') or '0')
  if now - win_start >= window then return now, 0, 0 end
  return win_start, tonumber(redis.call('HGET', KEYS[1], 'calls') or '0'),
    tonumber(redis.call('HGET', KEYS[1], 'fails') or '0')
end

local function save_counts(win_start, calls, fails)
  redis.call('HSET', KEYS[1], 'win_start', win_start, 'calls', calls, 'fails', fails)
  redis.call('PEXPIRE', KEYS[1], keep)
end

local function open_circuit()
  redis.call('HSET', KEYS[1], 'open_until', now + open_ms, 'win_start', now, 'calls', 0,
    'fails', 0)
  redis.call('PEXPIRE', KEYS[1], keep)
  return 'open'
end

if op == 'acquire' then
  if open_until == 0 and extra > 0 then
    local win_start, calls, fails = window_counts()
    save_counts(win_start, calls + extra, fails)
  end
  if open_until ~= 0 then
    if now < open_until then return {'open', open_until - now} end
    if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[8]) then return {'probe', 0} end
    return {'open', 0}
  end
  local cool_until = tonumber(redis.call('HGET', KEYS[1], 'cool_until') or '0')
  if now < cool_until then return {'cool', cool_until - now} end
  return {'closed', 0}
end

if op == 'abandon' then
  redis.call('DEL', KEYS[2])
  return ''
end

if op == 'cool' then
  local cool_until = tonumber(redis.call('HGET', KEYS[1], 'cool_until') or '0')
  if now + extra > cool_until then
    redis.call('HSET', KEYS[1], 'cool_until', now + extra)
  end
  if redis.call('PTTL', KEYS[1]) < keep + extra then
    redis.call('PEXPIRE', KEYS[1], keep + extra)
  end
  return ''
end

if ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])
  if op == 'success' then
    redis.call('HDEL', KEYS[1], 'open_until', 'win_start', 'calls', 'fails')
    return 'closed'
  end
  return open_circuit()
end
if open_until ~= 0 then return '' end

local win_start, calls, fails = window_counts()
calls = calls + 1 + extra
if op == 'failure' then fails = fails + 1 end
local trips
if ARGV[4] ~= '' then
  trips = calls >= tonumber(ARGV[5]) and fails >= tonumber(ARGV[4]) * calls
else
  trips = fails >= tonumber(ARGV[3])
end
if op == 'failure' and trips then return open_circuit() end
save_counts(win_start, calls, fails)
return ''

-- One admission, atomically: GCRA rate limits, then budget reservations. All checks run
-- before any write, so a denial changes nothing. Time comes from the server clock.
-- KEYS: rate keys (n_rate of them), then budget counter bases (period id appended here;
--       every key shares the tenant's hash tag, so the counters live in the same slot).
-- ARGV: n_rate, then per rate: limit, cost; then per budget: period, limit, amount, ttl_s.
-- Reply: {status (0 ok, 1 rate, 2 budget), index, detail, day_id, month_id,
--         then per rate: remaining, reset_ms}.
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + tonumber(t[2]) / 1000
local PERIOD = 60000
local EPS = 0.001

local day = math.floor(now_s / 86400)
local function month_of(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 100 + m
end
local month = month_of(day)

local n_rate = tonumber(ARGV[1])
local new_tats = {}
for i = 1, n_rate do
  local limit = tonumber(ARGV[2 * i])
  local cost = math.min(tonumber(ARGV[2 * i + 1]), limit)
  local interval = PERIOD / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '')
  if tat == nil or tat < now_ms then tat = now_ms end
  local new_tat = tat + cost * interval
  if new_tat - now_ms > PERIOD + EPS then
    return {1, i - 1, string.format('%.4f', new_tat - now_ms - PERIOD), day, month}
  end
  new_tats[i] = new_tat
end

local base = 2 + 2 * n_rate
local n_bud = (#ARGV - base + 1) / 4
local counters = {}
for j = 1, n_bud do
  local a = base + 4 * (j - 1)
  local key = KEYS[n_rate + j] .. (ARGV[a] == 'day' and day or month)
  local limit = tonumber(ARGV[a + 1])
  local amount = tonumber(ARGV[a + 2])
  local spent = tonumber(redis.call('GET', key) or '0')
  if spent + amount > limit or (amount == 0 and spent >= limit) then
    return {2, j - 1, tostring(spent), day, month}
  end
  counters[j] = key
end

local reply = {0, -1, '', day, month}
for i = 1, n_rate do
  local limit = tonumber(ARGV[2 * i])
  local ahead = new_tats[i] - now_ms
  redis.call('SET', KEYS[i], string.format('%.4f', new_tats[i]), 'PX', math.ceil(ahead) + 1000)
  reply[#reply + 1] = math.max(0, math.floor((PERIOD - ahead) / (PERIOD / limit) + 1e-6))
  reply[#reply + 1] = string.format('%.4f', ahead)
end
for j = 1, n_bud do
  local a = base + 4 * (j - 1)
  redis.call('INCRBY', counters[j], ARGV[a + 2])
  if redis.call('TTL', counters[j]) < 0 then redis.call('EXPIRE', counters[j], ARGV[a + 3]) end
end
return reply

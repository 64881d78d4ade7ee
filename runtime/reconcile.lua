-- Replace reservations with actual usage: add signed deltas to budget counters (never
-- below zero) and move token-bucket TATs by the token difference.
-- KEYS: budget counters (n_counters), then tpm keys.
-- ARGV: n_counters, per counter: delta, ttl_s; then per tpm key: limit, tokens.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
for i = 1, n do
  local delta = ARGV[2 * i]
  if delta ~= '0' then
    local value = redis.call('INCRBY', KEYS[i], delta)
    if value < 0 then redis.call('SET', KEYS[i], '0') end
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
  end
end
local base = 2 + 2 * n
for k = 1, (#ARGV - base + 1) / 2 do
  local key = KEYS[n + k]
  local limit = tonumber(ARGV[base + 2 * (k - 1)])
  local tokens = tonumber(ARGV[base + 2 * (k - 1) + 1])
  local tat = tonumber(redis.call('GET', key) or '')
  if tat ~= nil or tokens > 0 then
    if tat == nil or tat < now_ms then tat = now_ms end
    local new_tat = math.max(now_ms, tat + tokens * 60000 / limit)
    redis.call('SET', key, string.format('%.4f', new_tat), 'PX',
      math.ceil(new_tat - now_ms) + 1000)
  end
end
return 1

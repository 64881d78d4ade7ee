-- Read a budget counter for the current UTC period (server clock).
-- KEYS[1]: counter base; ARGV[1]: day | month. Reply: the counter as a string.
local now_s = tonumber(redis.call('TIME')[1])
local day = math.floor(now_s / 86400)
local id = day
if ARGV[1] == 'month' then
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  id = y * 100 + m
end
return redis.call('GET', KEYS[1] .. id) or '0'

-- Monotonic compare-and-set: store max(current, value), reply the stored value.
-- KEYS[1]: the water-mark; ARGV[1]: the candidate value.
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]

-- Settle one finished request: release its concurrency leases and move its token reservation to the
-- real usage (delta = actual - estimated, may be negative) in the tokens/min and tokens/day buckets.
--
-- Idempotent per request id: a settling sent again (its answer was lost to a stalled or dropped
-- connection, but Redis may have run it) finds the request's settled marker and changes nothing.
--
-- KEYS: 1 org buckets (hash), 2 org leases (zset), 3 key buckets (hash), 4 key leases (zset),
--       5 the request's settled marker (string, same hash tag)
-- ARGV: 1 now_ms (0: the Redis server's clock), 2 request id, 3 token delta,
--       4..7 org rpm, tpm, tpd, concurrency; 8..11 key rpm, tpm, tpd, concurrency (0: no limit),
--       12 how long the marker lives (ms)
-- Returns the number of leases released (0 for a replay).
-- Python twin: gateway/limits/scripts.py settle()

if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[12]) then
  return 0
end

local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local id = ARGV[2]
local delta = tonumber(ARGV[3])
local WINDOW = {60000, 60000, 86400000}
local released = 0

for s = 0, 1 do
  local hkey, zkey = KEYS[1 + 2 * s], KEYS[2 + 2 * s]
  local base = 4 + 4 * s
  if tonumber(ARGV[base + 3]) > 0 then
    released = released + redis.call('ZREM', zkey, id)
  end
  local limits = {tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])}
  if delta ~= 0 and (limits[2] > 0 or limits[3] > 0) then
    local h = redis.call('HMGET', hkey, 'r', 't', 'd', 'ts')
    local elapsed = now - (tonumber(h[4]) or now)
    if elapsed < 0 then elapsed = 0 end
    local used = {}
    local ttl = 1000
    for i = 1, 3 do
      local limit = limits[i]
      local u = 0
      if limit > 0 then
        u = (tonumber(h[i]) or 0) - elapsed * limit / WINDOW[i]
        if u < 0 then u = 0 end
        if i > 1 then
          u = u + delta
          if u < 0 then u = 0 end
        end
        local reset = math.ceil(u * WINDOW[i] / limit)
        if reset > ttl then ttl = reset end
      end
      used[i] = u
    end
    redis.call('HSET', hkey, 'r', string.format('%.17g', used[1]), 't', string.format('%.17g', used[2]),
               'd', string.format('%.17g', used[3]), 'ts', now)
    redis.call('PEXPIRE', hkey, ttl + 1000)
  end
end

return released

-- Extend the concurrency leases of requests still in flight on one replica (its renewal task, every
-- lease / 3 seconds: one call per lease set, every set in one round trip). Only leases still held are
-- extended (ZADD XX): one settled meanwhile, or purged once expired, stays gone.
--
-- KEYS: 1 a lease set (zset: request id -> deadline ms)
-- ARGV: 1 now_ms (0: the Redis server's clock), 2 lease ms, 3.. request ids
-- Returns the number of leases extended.
-- Python twin: gateway/limits/scripts.py renew()

local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lease = tonumber(ARGV[2])
local extended = 0
for i = 3, #ARGV do
  extended = extended + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
if extended > 0 then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return extended

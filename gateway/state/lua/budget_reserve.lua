-- Reserve a request's estimated cost against one or two monthly budgets (organisation, key).
-- KEYS: pairs of (spend hash {spent, reserved}, reservations zset) per budget checked.
-- ARGV[1] member ("request_id:estimate"), ARGV[2] estimate (ticks), ARGV[3] ttl_ms (of the month's
-- keys and of a reservation), then per budget: limit (ticks), floor (month-to-date spend known to SQL).
-- Admits while spent + reserved < limit for every budget, so concurrent requests overshoot by at most
-- one request. Reservations a dead replica never settled expire after ttl_ms.
-- Returns {1, 0, used, limit} when admitted, {0, budget_index, used, limit} when refused.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local estimate = ARGV[2]
local ttl = tonumber(ARGV[3])
local n = #KEYS / 2
local last_used, last_limit = 0, 0
for i = 1, n do
  local hash, res = KEYS[2 * i - 1], KEYS[2 * i]
  local expired = redis.call('ZRANGEBYSCORE', res, '-inf', now)
  for _, member in ipairs(expired) do
    local est = string.match(member, ':(%d+)$')
    redis.call('ZREM', res, member)
    if est then redis.call('HINCRBY', hash, 'reserved', -tonumber(est)) end
  end
  local floor = ARGV[3 + 2 * i]
  local spent = redis.call('HGET', hash, 'spent')
  if spent == false or tonumber(floor) > tonumber(spent) then
    redis.call('HSET', hash, 'spent', floor)
    spent = floor
  end
  local reserved = tonumber(redis.call('HGET', hash, 'reserved') or '0')
  local used = tonumber(spent) + reserved
  local limit = tonumber(ARGV[2 + 2 * i])
  if used >= limit then
    return {0, i, tostring(used), ARGV[2 + 2 * i]}
  end
  last_used, last_limit = used, ARGV[2 + 2 * i]
end
for i = 1, n do
  local hash, res = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', hash, 'reserved', estimate)
  redis.call('ZADD', res, now + ttl, ARGV[1])
  redis.call('PEXPIRE', hash, ttl + 3456000000)
  redis.call('PEXPIRE', res, ttl + 3456000000)
end
return {1, 0, tostring(last_used), last_limit}

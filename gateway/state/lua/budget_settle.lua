-- Settle a reservation: release the estimate (unless it already expired) and add the real cost.
-- Idempotent per request id: a settling sent again (its answer was lost to a stalled or dropped
-- connection, but Redis may have run it) finds the request's settled marker and changes nothing.
-- KEYS: 1 the request's settled marker (string, same hash tag), then pairs of (spend hash, reservations
-- zset) as in budget_reserve.
-- ARGV[1] member ("request_id:estimate"), ARGV[2] estimate, ARGV[3] cost (ticks), ARGV[4] ttl_ms,
-- ARGV[5] how long the marker lives (ms). Returns 1, or 0 for a replay.
-- Python twin: gateway/budget.py _settle_py()
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[5]) then
  return 0
end
local n = (#KEYS - 1) / 2
for i = 1, n do
  local hash, res = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('ZREM', res, ARGV[1]) == 1 then
    redis.call('HINCRBY', hash, 'reserved', -tonumber(ARGV[2]))
  end
  redis.call('HINCRBY', hash, 'spent', ARGV[3])
  redis.call('PEXPIRE', hash, tonumber(ARGV[4]) + 3456000000)
end
return 1

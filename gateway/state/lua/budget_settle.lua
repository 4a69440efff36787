-- Settle a reservation: release the estimate (unless it already expired) and add the real cost.
-- KEYS: pairs of (spend hash, reservations zset) as in budget_reserve.
-- ARGV[1] member ("request_id:estimate"), ARGV[2] estimate, ARGV[3] cost (ticks), ARGV[4] ttl_ms.
local n = #KEYS / 2
for i = 1, n do
  local hash, res = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('ZREM', res, ARGV[1]) == 1 then
    redis.call('HINCRBY', hash, 'reserved', -tonumber(ARGV[2]))
  end
  redis.call('HINCRBY', hash, 'spent', ARGV[3])
  redis.call('PEXPIRE', hash, tonumber(ARGV[4]) + 3456000000)
end
return 1

-- The conversation ending with one stored response, in ONE round trip: follow 'prev' links from
-- KEYS[1]. ARGV[1] the key of a response id without the id (same hash tag: one organisation's
-- responses share a slot), ARGV[2] the most links followed. Returns {status, input, output, input,
-- output, ...} newest first; status 'ok', 'missing' (then the missing id), or 'deep'.
-- The remaining ARGV are only read by the in-process twin.
local out = {'ok'}
local key = KEYS[1]
local id = ''
for _ = 1, tonumber(ARGV[2]) do
  local f = redis.call('HMGET', key, 'prev', 'input', 'output')
  if not f[2] then
    return {'missing', id}
  end
  out[#out + 1] = f[2]
  out[#out + 1] = f[3]
  if f[1] == '' then
    return out
  end
  id = f[1]
  key = ARGV[1] .. id
end
return {'deep'}

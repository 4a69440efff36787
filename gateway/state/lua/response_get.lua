-- One stored response: {Response object JSON, input items JSON}, or an empty list.
-- KEYS[1] the response's hash.
-- The remaining ARGV are only read by the in-process twin.
local f = redis.call('HMGET', KEYS[1], 'response', 'input')
if not f[1] then
  return {}
end
return f

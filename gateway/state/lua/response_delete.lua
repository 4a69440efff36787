-- Delete one stored response. KEYS[1] the response's hash. Returns 1 if it existed.
-- The remaining ARGV are only read by the in-process twin.
return redis.call('DEL', KEYS[1])

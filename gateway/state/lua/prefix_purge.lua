-- Forget a worker for one model: its prefix index and in-flight set (removed or restarted worker).
-- KEYS[1] prefix index ZSET, KEYS[2] in-flight ZSET. Returns the index entries dropped.
local dropped = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return dropped

-- Forget a worker for one model: its prefix index, in-flight set and recent work (removed or restarted
-- worker: its cache is gone, and with it what the work stood for).
-- KEYS[1] prefix index ZSET, KEYS[2] in-flight ZSET, KEYS[3] recent work HASH. Returns the index entries dropped.
local dropped = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return dropped

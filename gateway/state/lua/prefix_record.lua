-- After the response: release the in-flight slot, correct the index from what the worker reported,
-- and (when a retry went to another worker than the one prefix_route recorded) record the worker that
-- served the request as holding its blocks.
-- KEYS[1] the serving worker's prefix index ZSET, KEYS[2] the reserved worker's in-flight ZSET.
-- ARGV: packed 8-byte hashes, index bound (entries), request id, stale threshold ('' : none),
--       record (1/0), index ttl ms.
-- Feedback: the worker reported far fewer cached tokens than predicted, so it evicted blocks the index
-- thought it held; being LRU, it evicted everything used before them. The threshold is the score the
-- request's deepest matched block had before this request (prefix_route returned it): entries scored
-- at or below it are dropped (this request's own blocks were re-scored since, and stay).
-- Scores as in prefix_route.lua. Returns {entries dropped as stale, entries evicted by the bound}.
local hashes = ARGV[1]
local cap = tonumber(ARGV[2])
local rid = ARGV[3]
local threshold = ARGV[4]
local record = ARGV[5] == '1'
local ttl = tonumber(ARGV[6])
local idx = KEYS[1]
redis.call('ZREM', KEYS[2], rid)
local blocks = math.floor(#hashes / 8)
local stale, evicted = 0, 0
if threshold ~= '' then
  stale = redis.call('ZREMRANGEBYSCORE', idx, '-inf', threshold)
end
if record and blocks > 0 then
  local t = redis.call('TIME')
  local base = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 4096
  evicted = write_blocks(idx, hashes, 1, blocks, base, cap, ttl)
end
return {stale, evicted}

-- Read-only twin of prefix_route for the routing explain endpoint: for every candidate worker, the
-- longest run of the request's leading blocks in its index, its requests in flight (deadlines not
-- yet passed) and, with a work half-life, its recent work (decayed to now), and the worker the
-- conversation hint is bound to. Changes nothing. The search is prefix_match.lua's matched_blocks and
-- the recent work prefix_work.lua's work_now, both put before this file by the loader.
-- KEYS[1] affinity key; then per candidate: KEYS[2i] prefix index ZSET, KEYS[2i+1] in-flight ZSET;
--       with a work half-life, then per candidate KEYS[2n+1+i] its recent work HASH (prefix_route.lua).
-- ARGV: packed 8-byte hashes, prefix(1/0), has_hint(1/0), candidates n and work half-life ms (0: off)
--       (both optional: without them every key past the first is a pair).
-- Returns {bound worker id ('' none), match_1..match_n, inflight_1..inflight_n,
--          work_1..work_n (blocks, decayed to now, as text)}.
local hashes = ARGV[1]
local use_prefix = ARGV[2] == '1'
local has_hint = ARGV[3] == '1'
local n = tonumber(ARGV[4]) or (#KEYS - 1) / 2
local halflife = tonumber(ARGV[5]) or 0
local W = 2 * n + 1
local blocks = math.floor(#hashes / 8)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local matches, flights = {}, {}
for i = 1, n do
  flights[i] = redis.call('ZCOUNT', KEYS[2 * i + 1], '(' .. now, '+inf')
  matches[i] = use_prefix and matched_blocks(KEYS[2 * i], hashes, blocks) or 0
end
local bound_to = ''
if has_hint then bound_to = redis.call('GET', KEYS[1]) or '' end
local out = {bound_to}
for i = 1, n do out[#out + 1] = matches[i] end
for i = 1, n do out[#out + 1] = flights[i] end
for i = 1, n do
  out[#out + 1] = halflife > 0 and string.format('%.17g', work_now(KEYS[W + i], now, halflife)) or '0'
end
return out

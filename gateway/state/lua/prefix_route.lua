-- Prefix-aware routing, before the upstream call: for every candidate worker, the longest run of the
-- request's leading blocks in its index and its requests in flight (all replicas); then the choice
-- (the rule of gateway/routing/choose.py, kept identical), the reservation of one in-flight slot, and
-- the recording of the chosen worker for the request's blocks (at once, so that a request arriving
-- before this one ends already sees where its prefix is going).
-- KEYS[1] affinity key; then per candidate: KEYS[2i] prefix index ZSET, KEYS[2i+1] in-flight ZSET;
--       with a work half-life, then per candidate KEYS[2n+1+i] its recent work HASH (v: blocks, t: ms).
-- ARGV: packed 8-byte hashes, prefix(1/0), load_factor, load_slack, kv_limit, load_cost, start (0-based),
--       request id, in-flight ttl ms, affinity ttl ms, has_hint(1/0), index ttl ms, refresh ms,
--       affinity slack (the bound's slack for the worker a hint is bound to), opens(1/0: the request may
--       open a conversation), work half-life ms (0: off), work weight, then per candidate: id, waiting,
--       kv usage, index bound (entries).
-- Recent work (half-life > 0): every routed request adds the blocks it is predicted to prefill (those
-- the chosen worker does not hold) to that worker's work, which decays by half every half-life; a
-- request that opens a conversation with no binding yet counts `work weight` x each worker's work in
-- its cost (so new conversations go where the prefill of the recent past was least).
-- Index scores: ms x 4096 + (4095 - position): a chain's earlier blocks outlive its later ones, so what
-- is left of a chain after eviction is always a prefix of it (prefix_match.lua's search, put before this
-- file by the loader, relies on this).
-- Recording writes only what changes: when the chosen worker's deepest matched block was used less than
-- `refresh ms` ago, its matched blocks keep their scores and only the blocks after them are written,
-- scored as if recorded at that block's millisecond (so the chain's scores still fall with the position).
-- In-flight sets: only the chosen worker's is cleaned of passed deadlines (the one that grows); the
-- others are counted by deadline.
-- Returns {chosen (0-based, -1 none), affinity used (1/0), entries evicted, the chosen worker's
--          score of its deepest matched block before this request ('' if none; prefix_record's
--          feedback threshold), match_1..match_n, inflight_1..inflight_n, work_1..work_n (a first
--          placement's recent work of each eligible candidate before this request, '%.3f'; '' where
--          not read): a retry re-applies the same rule locally, work term included}.
local hashes = ARGV[1]
local use_prefix = ARGV[2] == '1'
local load_factor = tonumber(ARGV[3])
local slack = tonumber(ARGV[4])
local kv_limit = tonumber(ARGV[5])
local load_cost = tonumber(ARGV[6])
local start = tonumber(ARGV[7])
local rid = ARGV[8]
local inflight_ttl = tonumber(ARGV[9])
local affinity_ttl = tonumber(ARGV[10])
local has_hint = ARGV[11] == '1'
local index_ttl = tonumber(ARGV[12])
local refresh = tonumber(ARGV[13])
local affinity_slack = tonumber(ARGV[14])
local opens = ARGV[15] == '1'
local halflife = tonumber(ARGV[16])
local work_weight = tonumber(ARGV[17])
local F = 17
local n = (#ARGV - F) / 4
local blocks = math.floor(#hashes / 8)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local W = 2 * n + 1  -- KEYS[W + i]: candidate i's recent work (prefix_work.lua's work_now)

local ids, loads, kv, matches, flights = {}, {}, {}, {}, {}
for i = 1, n do
  ids[i] = ARGV[F + 4 * i - 3]
  flights[i] = redis.call('ZCOUNT', KEYS[2 * i + 1], '(' .. now, '+inf')
  loads[i] = flights[i] + tonumber(ARGV[F + 4 * i - 2])
  kv[i] = tonumber(ARGV[F + 4 * i - 1])
  matches[i] = use_prefix and matched_blocks(KEYS[2 * i], hashes, blocks) or 0
end

-- eligibility (choose.eligible), under the bound with slack `s`
local total, least = 0, -1
for i = 1, n do
  total = total + loads[i]
  if least < 0 or loads[i] < least then least = loads[i] end
end
local function eligible(s)
  local bound = math.max(load_factor * (total + 1) / n, least + s)
  local any_both, any_under = false, false
  local under, both, ok = {}, {}, {}
  for i = 1, n do
    under[i] = loads[i] + 1 <= bound
    both[i] = under[i] and kv[i] < kv_limit
    if both[i] then any_both = true end
    if under[i] then any_under = true end
  end
  for i = 1, n do
    if any_both then ok[i] = both[i] elseif any_under then ok[i] = under[i] else ok[i] = true end
  end
  return ok
end
local ok = eligible(slack)

-- choice (choose.pick)
local chosen, by_affinity = -1, 0
local bound_to = false
if has_hint then
  bound_to = redis.call('GET', KEYS[1])
  if bound_to then
    local held = ok
    if affinity_slack ~= slack then held = eligible(affinity_slack) end
    for i = 1, n do
      if ids[i] == bound_to and held[i] then chosen = i; by_affinity = 1 end
    end
  end
end
local work = {}  -- each eligible candidate's recent work, read only for a first placement
if chosen < 0 and halflife > 0 and opens and not bound_to then
  for i = 1, n do
    if ok[i] then work[i] = work_now(KEYS[W + i], now, halflife) end
  end
end
if chosen < 0 then
  local best_cost = 0
  for k = 0, n - 1 do
    local i = (start + k) % n + 1
    if ok[i] then
      local cost = load_cost * loads[i]
      if use_prefix then cost = cost - matches[i] end
      if work[i] then cost = cost + work_weight * work[i] end
      if chosen < 0 or cost < best_cost or (cost == best_cost and kv[i] < kv[chosen]) then
        chosen = i
        best_cost = cost
      end
    end
  end
end

local evicted = 0
local last_use = ''
if chosen > 0 then
  local inf = KEYS[2 * chosen + 1]
  redis.call('ZREMRANGEBYSCORE', inf, '-inf', now)
  redis.call('ZADD', inf, now + inflight_ttl, rid)
  redis.call('PEXPIRE', inf, inflight_ttl)
  if has_hint then redis.call('SET', KEYS[1], ids[chosen], 'PX', affinity_ttl) end
  if halflife > 0 and blocks > matches[chosen] then
    local wk = KEYS[W + chosen]
    local before = work[chosen] or work_now(wk, now, halflife)
    redis.call('HSET', wk, 'v', string.format('%.17g', before + blocks - matches[chosen]), 't', now)
    redis.call('PEXPIRE', wk, math.floor(halflife * 16))
  end
  if use_prefix and blocks > 0 then
    local idx = KEYS[2 * chosen]
    local m = matches[chosen]
    local from, base = 1, now * 4096
    if m > 0 then
      last_use = redis.call('ZSCORE', idx, string.sub(hashes, (m - 1) * 8 + 1, m * 8))
      local used = math.floor(tonumber(last_use) / 4096)
      if used >= now - refresh then
        -- recent: keep the matched blocks' scores; the new ones take that millisecond's, and the
        -- feedback threshold goes just below the deepest of them (prefix_record drops <= it)
        from, base = m + 1, used * 4096
        last_use = string.format('%.0f', base + 4095 - math.min(blocks - 1, 4095) - 1)
      end
    end
    if from <= blocks then
      evicted = write_blocks(idx, hashes, from, blocks, base, tonumber(ARGV[F + 4 * chosen]), index_ttl)
    end
  end
end

local out = {chosen - 1, by_affinity, evicted, last_use}
for i = 1, n do out[#out + 1] = matches[i] end
for i = 1, n do out[#out + 1] = flights[i] end
for i = 1, n do out[#out + 1] = work[i] and string.format('%.3f', work[i]) or '' end
return out

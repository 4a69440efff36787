-- Check and reserve every rate limit of one request, atomically: requests/min, tokens/min, tokens/day
-- (token buckets that drain continuously) and concurrent requests (leases), for the organisation and
-- the key. Either everything is reserved or nothing is.
--
-- KEYS: 1 org buckets (hash), 2 org leases (zset), 3 key buckets (hash), 4 key leases (zset)
-- ARGV: 1 now_ms (0: the Redis server's clock), 2 request id, 3 lease ms, 4 estimated tokens,
--       5..8 org rpm, tpm, tpd, concurrency; 9..12 key rpm, tpm, tpd, concurrency (0: no limit)
-- Returns {admitted, failed (0 or 1..8: which limit, in ARGV order), retry_ms (-1: can never fit),
--          then remaining and reset_ms for each of the 8 limits}
-- Python twin: gateway/limits/scripts.py reserve()

local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local id = ARGV[2]
local lease = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local WINDOW = {60000, 60000, 86400000}
local FIELD = {'r', 't', 'd'}

local admitted = 1
local failed = 0
local worst = 0
local out = {}
local state = {}

for s = 0, 1 do
  local hkey, zkey = KEYS[1 + 2 * s], KEYS[2 + 2 * s]
  local base = 5 + 4 * s
  local st = {used = {0, 0, 0}, any = false, conc = 0}
  local cost = {1, tokens, tokens}
  local has_bucket = false
  for i = 1, 3 do
    if tonumber(ARGV[base + i - 1]) > 0 then has_bucket = true end
  end
  if has_bucket then
    st.any = true
    local h = redis.call('HMGET', hkey, 'r', 't', 'd', 'ts')
    local elapsed = now - (tonumber(h[4]) or now)
    if elapsed < 0 then elapsed = 0 end
    for i = 1, 3 do
      local limit = tonumber(ARGV[base + i - 1])
      local used = tonumber(h[i]) or 0
      if limit > 0 then
        used = used - elapsed * limit / WINDOW[i]
        if used < 0 then used = 0 end
        local retry = 0
        if cost[i] > limit then
          retry = -1
        elseif used + cost[i] > limit then
          retry = math.ceil((used + cost[i] - limit) * WINDOW[i] / limit)
        end
        if retry ~= 0 then
          admitted = 0
          if retry == -1 or (worst ~= -1 and retry > worst) then
            worst = retry
            failed = base - 5 + i
          end
        end
      else
        used = 0
      end
      st.used[i] = used
    end
  end
  local climit = tonumber(ARGV[base + 3])
  if climit > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
    st.conc = redis.call('ZCARD', zkey)
    if st.conc + 1 > climit then
      admitted = 0
      if worst ~= -1 and 1000 > worst then
        worst = 1000
        failed = base - 1
      end
    end
  end
  state[s] = st
end

for s = 0, 1 do
  local hkey, zkey = KEYS[1 + 2 * s], KEYS[2 + 2 * s]
  local base = 5 + 4 * s
  local st = state[s]
  local cost = {1, tokens, tokens}
  local ttl = 1000
  for i = 1, 3 do
    local limit = tonumber(ARGV[base + i - 1])
    local used = st.used[i]
    if limit > 0 and admitted == 1 then
      used = used + cost[i]
      st.used[i] = used
    end
    if limit > 0 then
      local remaining = math.floor(limit - used)
      if remaining < 0 then remaining = 0 end
      local reset = math.ceil(used * WINDOW[i] / limit)
      if reset > ttl then ttl = reset end
      out[#out + 1] = remaining
      out[#out + 1] = reset
    else
      out[#out + 1] = 0
      out[#out + 1] = 0
    end
  end
  local climit = tonumber(ARGV[base + 3])
  local inflight = st.conc
  if climit > 0 and admitted == 1 then
    redis.call('ZADD', zkey, now + lease, id)
    redis.call('PEXPIRE', zkey, lease)
    inflight = inflight + 1
  end
  if climit > 0 then
    out[#out + 1] = math.max(climit - inflight, 0)
  else
    out[#out + 1] = 0
  end
  out[#out + 1] = 0
  if st.any and admitted == 1 then
    redis.call('HSET', hkey, 'r', string.format('%.17g', st.used[1]), 't', string.format('%.17g', st.used[2]),
               'd', string.format('%.17g', st.used[3]), 'ts', now)
    redis.call('PEXPIRE', hkey, ttl + 1000)
  end
end

return {admitted, failed, worst, unpack(out)}

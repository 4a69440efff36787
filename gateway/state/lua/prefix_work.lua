-- Shared fragment (the loader puts it before prefix_route.lua and prefix_peek.lua: state/base.py): a
-- worker's recent work, the blocks of predicted prefill routed there lately, decayed to `now` (ms): the
-- HASH holds v (blocks as of t) and t (ms), and v halves every `halflife` ms. 0 when nothing was routed
-- there within the counter's life. The Python twin is gateway/routing/index.work_now.
local function work_now(key, now, halflife)
  local vt = redis.call('HMGET', key, 'v', 't')
  if not vt[1] then return 0 end
  return tonumber(vt[1]) * math.pow(0.5, math.max(0, now - tonumber(vt[2])) / halflife)
end

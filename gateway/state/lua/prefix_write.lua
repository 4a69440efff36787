-- Shared fragment (the loader puts it before prefix_route.lua and prefix_record.lua: state/base.py):
-- index blocks FROM..BLOCKS of the packed 8-byte hashes in the worker's index ZSET, scored from BASE
-- (a millisecond times 4096; deeper blocks score lower, so a chain's earlier blocks outlive its later
-- ones: see prefix_route.lua), then hold the index to its bound (CAP entries, 1/16 slack before the
-- oldest go) and its TTL. Returns the entries evicted by the bound. The Python twin is in
-- gateway/routing/index.py (_add_blocks).
local function write_blocks(idx, hashes, from, blocks, base, cap, ttl)
  local args = {}
  for b = from, blocks do
    args[#args + 1] = base + 4095 - math.min(b - 1, 4095)  -- a number: Redis formats it (exactly, < 2^53)
    args[#args + 1] = string.sub(hashes, (b - 1) * 8 + 1, b * 8)
  end
  for j = 1, #args, 1000 do
    redis.call('ZADD', idx, unpack(args, j, math.min(j + 999, #args)))
  end
  local evicted = 0
  local size = redis.call('ZCARD', idx)
  if size > cap + math.floor(cap / 16) then
    evicted = size - cap
    redis.call('ZPOPMIN', idx, evicted)
  end
  redis.call('PEXPIRE', idx, ttl)
  return evicted
end

-- Shared fragment (the loader puts it before prefix_route.lua and prefix_peek.lua: state/base.py): how
-- many leading blocks of the packed 8-byte hashes the index ZSET holds. A block is only ever indexed
-- with every block before it, and a chain's earlier blocks outlive its later ones (scores: see
-- prefix_route.lua), so what an index holds of a chain is a prefix of it: the first block decides a
-- miss in one lookup (most workers hold none of a given conversation), then a binary search finds the
-- length. The Python twin is gateway/routing/index.matched_blocks.
local function matched_blocks(idx, hashes, blocks)
  if blocks == 0 or not redis.call('ZSCORE', idx, string.sub(hashes, 1, 8)) then return 0 end
  local lo, hi = 1, blocks
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if redis.call('ZSCORE', idx, string.sub(hashes, (mid - 1) * 8 + 1, mid * 8)) then
      lo = mid
    else
      hi = mid - 1
    end
  end
  return lo
end

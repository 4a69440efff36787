-- Hand one usage record to the durable stream the ledger writer reads.
-- KEYS[1] the usage stream; ARGV[1] the encoded record. Returns the entry id.
return redis.call('XADD', KEYS[1], '*', 'r', ARGV[1])

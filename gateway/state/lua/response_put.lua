-- Keep one stored response (POST /v1/responses with store=true) for the retention time.
-- KEYS[1] the response's hash (hash tag: its organisation). ARGV[1] the previous response's id ('' if
-- none), ARGV[2] its input items (JSON), ARGV[3] its output items (JSON), ARGV[4] the Response object
-- (JSON), ARGV[5] the retention in ms. ARGV[6], ARGV[7] are only read by the in-process twin.
redis.call('HSET', KEYS[1], 'prev', ARGV[1], 'input', ARGV[2], 'output', ARGV[3], 'response', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1

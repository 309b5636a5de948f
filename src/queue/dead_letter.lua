#!lua
-- Dead-letter one job: error result to its reply stream, the original fields plus the reason to
-- the dead-letter stream, then acknowledge and delete it, atomically.
-- KEYS[1] job stream, KEYS[2] reply stream, KEYS[3] dead-letter stream
-- ARGV[1] group, ARGV[2] job entry id, ARGV[3] reply MAXLEN, ARGV[4] dead MAXLEN,
-- ARGV[5] job_id, ARGV[6] result JSON, ARGV[7] error code, ARGV[8] error message,
-- ARGV[9] deliveries, ARGV[10] worker, ARGV[11] reply stream expiry in seconds (0 = none),
-- ARGV[12..] original field/value pairs (at most 64 pairs and the frame dropped, by the worker)
-- Returns 1 when written, 0 when the entry was no longer pending, -1 when the reply key holds
-- something other than a stream (nothing written in either case).
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return -1
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job_id', ARGV[5], 'result', ARGV[6])
local dead = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*'}
for i = 12, #ARGV do
  dead[#dead + 1] = ARGV[i]
end
local extra = {'error', ARGV[7], 'error_message', ARGV[8], 'deliveries', ARGV[9],
               'worker', ARGV[10], 'entry_id', ARGV[2]}
for _, v in ipairs(extra) do
  dead[#dead + 1] = v
end
redis.call(unpack(dead))
if tonumber(ARGV[11]) > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[11])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1

#!lua
-- Publish one result and acknowledge its job, atomically.
-- KEYS[1] job stream, KEYS[2] reply stream
-- ARGV[1] group, ARGV[2] job entry id, ARGV[3] reply MAXLEN (approximate),
-- ARGV[4] job_id, ARGV[5] result JSON, ARGV[6] reply stream expiry in seconds (0 = none: the
-- default results stream, capped by MAXLEN instead)
-- Returns 1 when published; 0 when the entry was no longer pending (another worker finished it
-- first), and then nothing is written; -1 when the reply key holds something other than a
-- stream. Every check comes before the first write, and the shebang makes Redis refuse the whole
-- script up front when it is out of memory, so a job is never acknowledged without its result.
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return -1
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job_id', ARGV[4], 'result', ARGV[5])
if tonumber(ARGV[6]) > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1

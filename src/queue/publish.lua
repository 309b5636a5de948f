-- Publish one result and acknowledge its job, atomically.
-- KEYS[1] job stream, KEYS[2] reply stream
-- ARGV[1] group, ARGV[2] job entry id, ARGV[3] reply MAXLEN (approximate),
-- ARGV[4] job_id, ARGV[5] result JSON
-- Returns 1 when published, 0 when the entry was no longer pending (another worker finished
-- it first): then nothing is written, so a reclaimed job is not answered twice.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job_id', ARGV[4], 'result', ARGV[5])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1

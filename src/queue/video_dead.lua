-- Dead-letters a video that cannot be tracked (delivered too often, or its recorded state
-- unreadable), atomically: the letter to the dead-letter stream, the video's recorded state
-- deleted (leaving the `done` marker, so late frames do not start it again), the tracking job
-- acknowledged. (DESIGN §13; the video's output stream gets nothing.)
-- KEYS[1] the shard's tracking-job stream, KEYS[2] the dead-letter stream
-- ARGV[1] group, ARGV[2] tracking-job entry id, ARGV[3] dead MAXLEN, ARGV[4] video_id,
-- ARGV[5] error code, ARGV[6] error message, ARGV[7] deliveries, ARGV[8] worker,
-- ARGV[9] the video's state hash, ARGV[10] its frames hash, ARGV[11] the open set,
-- ARGV[12] marker expiry s.
-- Returns 1 when written, 0 when the tracking job was no longer pending; an error when a key
-- cannot take its write (nothing written then).
local state, frames = ARGV[9], ARGV[10]
local letter = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'video_id', ARGV[4], 'error', ARGV[5],
                'error_message', ARGV[6], 'deliveries', ARGV[7], 'worker', ARGV[8], 'entry_id', ARGV[2]}
for _, c in ipairs({{'XACK', KEYS[1], ARGV[1], ARGV[2]}, {'XDEL', KEYS[1], ARGV[2]}, letter,
                    {'DEL', state}, {'DEL', frames}, {'HSET', state, 'done', '1'}, {'EXPIRE', state, '1'},
                    {'ZREM', ARGV[11], ARGV[4]}}) do
  if not redis.acl_check_cmd(unpack(c)) then
    return redis.error_reply('NOPERM this user may not run ' .. c[1] .. ' on ' .. c[2])
  end
end
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE the dead-letter stream ' .. KEYS[2] .. ' holds a ' .. t)
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 0
end
redis.call(unpack(letter))
redis.call('DEL', state, frames)
redis.call('HSET', state, 'done', '1')
redis.call('EXPIRE', state, ARGV[12])
redis.call('ZREM', ARGV[11], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1

-- Writes a tracked video's output and forgets the video, atomically (DESIGN §13). The tracker
-- has built the frame entries under a temporary stream; this step appends the `done` entry and
-- moves it whole to the output stream (RENAME when the output stream does not exist yet, else
-- a copy), so a reader never sees a partial or duplicated sequence; then it deletes the
-- video's recorded state (leaving a `done` marker that makes late duplicate frames count
-- once) and acknowledges the tracking job.
-- KEYS[1] the shard's tracking-job stream
-- ARGV[1] group, ARGV[2] tracking-job entry id, ARGV[3] the temporary stream, ARGV[4] the
-- output stream, ARGV[5] the video's state hash, ARGV[6] its frames hash, ARGV[7] the open set,
-- ARGV[8] video_id, ARGV[9] the `done` JSON, ARGV[10] output expiry s, ARGV[11] marker expiry s
-- (every key in the job stream's slot).
-- Returns 1 when written; 0 when the tracking job was no longer pending, or the video was
-- written already (then the job is acknowledged); {-1, why} when the output stream cannot take
-- it. An error when the tracking-job stream cannot be acknowledged. Nothing is written unless 1
-- (the temporary stream is deleted in every case but {-1, why} and errors).
local tmp, out, state, frames = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
for _, c in ipairs({{'XACK', KEYS[1], ARGV[1], ARGV[2]}, {'XDEL', KEYS[1], ARGV[2]},
                    {'DEL', state}, {'DEL', frames}, {'HSET', state, 'done', '1'}, {'EXPIRE', state, '1'},
                    {'ZREM', ARGV[7], ARGV[8]}, {'XADD', tmp, '*', 'done', ''}, {'DEL', tmp}}) do
  if not redis.acl_check_cmd(unpack(c)) then
    return redis.error_reply('NOPERM this user may not run ' .. c[1] .. ' on ' .. c[2])
  end
end
for _, c in ipairs({{'RENAME', tmp, out}, {'XADD', out, '*', 'frame', ''}, {'EXPIRE', out, '1'},
                    {'PERSIST', out}}) do
  if not redis.acl_check_cmd(unpack(c)) then
    return {-1, 'the ACL denies ' .. c[1] .. ' on it'}
  end
end
local t = redis.call('TYPE', out)['ok']
if t ~= 'none' and t ~= 'stream' then
  return {-1, 'it holds a ' .. t .. ', not a stream'}
end
if t == 'stream' then
  local top = redis.call('XINFO', 'STREAM', out)
  for i = 1, #top, 2 do
    if top[i] == 'last-generated-id' and top[i + 1] == '18446744073709551615-18446744073709551615' then
      return {-1, 'its ids are exhausted'}
    end
  end
end
t = redis.call('TYPE', tmp)['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE the temporary stream ' .. tmp .. ' holds a ' .. t)
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  redis.call('DEL', tmp)
  return 0
end
if redis.call('HEXISTS', state, 'done') == 1 then
  redis.call('DEL', tmp)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 0
end
redis.call('XADD', tmp, '*', 'done', ARGV[9])
if redis.call('EXISTS', out) == 0 then
  redis.call('RENAME', tmp, out)
  if tonumber(ARGV[10]) == 0 then
    -- The temporary stream's own expiry came along.
    redis.call('PERSIST', out)
  end
else
  for _, e in ipairs(redis.call('XRANGE', tmp, '-', '+')) do
    redis.call('XADD', out, '*', unpack(e[2]))
  end
  redis.call('DEL', tmp)
end
if tonumber(ARGV[10]) > 0 then
  redis.call('EXPIRE', out, ARGV[10])
end
redis.call('DEL', state, frames)
redis.call('HSET', state, 'done', '1')
redis.call('EXPIRE', state, ARGV[11])
redis.call('ZREM', ARGV[7], ARGV[8])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1

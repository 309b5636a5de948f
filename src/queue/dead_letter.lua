-- Dead-letter one job: error result to its reply stream, the original fields plus the reason to
-- the dead-letter stream, then acknowledge and delete it, atomically. (The `#!lua` line is the
-- worker's, as for publish.lua.)
-- KEYS[1] job stream, KEYS[2] dead-letter stream
-- ARGV[1] group, ARGV[2] job entry id, ARGV[3] reply MAXLEN, ARGV[4] dead MAXLEN,
-- ARGV[5] job_id, ARGV[6] result JSON, ARGV[7] error code, ARGV[8] error message,
-- ARGV[9] deliveries, ARGV[10] worker, ARGV[11] reply stream expiry in seconds (0 = none),
-- ARGV[12] the reply stream (an argument: see publish.lua),
-- ARGV[13..22] the video block of video.lua (ARGV[17] = '' when the job is no frame of a video),
-- ARGV[23..] original field/value pairs (at most 64 pairs and the frame dropped, by the worker)
-- Returns 1 when written, 0 when the entry was no longer pending, {-1, why} when the reply
-- stream cannot take the result, {-2, video} when the frame's video object disagrees with the
-- one its video was first recorded with; an error when the job stream cannot be acknowledged or the
-- dead-letter stream cannot take the letter (ACL, a key of another type, ids exhausted): that
-- is no fault of the job, and it stays pending until the operator mends it. In every case but
-- 1, nothing is written.
local reply = ARGV[12]
local dead = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*'}
for i = 23, #ARGV do
  dead[#dead + 1] = ARGV[i]
end
for _, v in ipairs({'error', ARGV[7], 'error_message', ARGV[8], 'deliveries', ARGV[9],
                    'worker', ARGV[10], 'entry_id', ARGV[2]}) do
  dead[#dead + 1] = v
end
for _, c in ipairs({{'XACK', KEYS[1], ARGV[1], ARGV[2]}, {'XDEL', KEYS[1], ARGV[2]}, dead}) do
  if not redis.acl_check_cmd(unpack(c)) then
    return redis.error_reply('NOPERM this user may not run ' .. c[1] .. ' on ' .. c[2])
  end
end
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE the dead-letter stream ' .. KEYS[2] .. ' holds a ' .. t)
end
if t == 'stream' then
  local top = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #top, 2 do
    if top[i] == 'last-generated-id' and top[i + 1] == '18446744073709551615-18446744073709551615' then
      return redis.error_reply('ERR the dead-letter stream ' .. KEYS[2] .. ' has exhausted its ids')
    end
  end
end
if not redis.acl_check_cmd('XADD', reply, 'MAXLEN', '~', ARGV[3], '*', 'job_id', '', 'result', '') then
  return {-1, 'the ACL denies XADD on it'}
end
if tonumber(ARGV[11]) > 0 and not redis.acl_check_cmd('EXPIRE', reply, ARGV[11]) then
  return {-1, 'the ACL denies EXPIRE on it'}
end
t = redis.call('TYPE', reply)['ok']
if t ~= 'none' and t ~= 'stream' then
  return {-1, 'it holds a ' .. t .. ', not a stream'}
end
local video = video_check(13)
if video then
  return video
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 0
end
-- Every check is done; the first write can still fail (the reply stream's ids exhausted), and
-- then nothing is written.
local added = redis.pcall('XADD', reply, 'MAXLEN', '~', ARGV[3], '*', 'job_id', ARGV[5], 'result', ARGV[6])
if type(added) == 'table' and added['err'] then
  return {-1, added['err']}
end
local letter = redis.pcall(unpack(dead))
if type(letter) == 'table' and letter['err'] then
  -- Checked above, so not expected; should it happen, the reply is taken back.
  redis.call('XDEL', reply, added)
  return redis.error_reply('ERR the dead-letter stream ' .. KEYS[2] .. ' refused the letter: ' .. letter['err'])
end
if tonumber(ARGV[11]) > 0 then
  redis.call('EXPIRE', reply, ARGV[11])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
video_record(13)
return 1

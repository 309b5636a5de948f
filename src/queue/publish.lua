-- Publish one result and acknowledge its job, atomically. (The worker puts the `#!lua` line
-- on top: with `flags=allow-oom` when the step frees at least what it adds, so a Redis over
-- `maxmemory` drains its backlog; plain otherwise, and Redis then refuses the whole script
-- while it is out of memory.)
-- KEYS[1] job stream
-- ARGV[1] group, ARGV[2] job entry id, ARGV[3] reply MAXLEN (approximate), ARGV[4] job_id,
-- ARGV[5] result JSON, ARGV[6] reply stream expiry in seconds (0 = none: the default results
-- stream, capped by MAXLEN instead), ARGV[7] the reply stream (in the job stream's slot; an
-- argument, not a key, so that an ACL denying it denies this reply, not the whole script),
-- ARGV[8..17] the video block of video.lua (ARGV[12] = '' when the job is no frame of a video).
-- Returns 1 when published; 0 when the entry was no longer pending (another worker finished
-- it first); {-1, why} when the reply stream cannot take the result (a key of another type,
-- denied by the ACL, its ids exhausted); {-2, video} when the frame's video object disagrees
-- with the one its video was first recorded with. An error when the job stream cannot be acknowledged
-- (the ACL denies XACK or XDEL). In every case but 1, nothing is written: every check comes
-- before the first write, and the first write is the only one that can fail.
local reply = ARGV[7]
for _, c in ipairs({{'XACK', KEYS[1], ARGV[1], ARGV[2]}, {'XDEL', KEYS[1], ARGV[2]}}) do
  if not redis.acl_check_cmd(unpack(c)) then
    return redis.error_reply('NOPERM this user may not run ' .. c[1] .. ' on the job stream ' .. KEYS[1])
  end
end
if not redis.acl_check_cmd('XADD', reply, 'MAXLEN', '~', ARGV[3], '*', 'job_id', '', 'result', '') then
  return {-1, 'the ACL denies XADD on it'}
end
if tonumber(ARGV[6]) > 0 and not redis.acl_check_cmd('EXPIRE', reply, ARGV[6]) then
  return {-1, 'the ACL denies EXPIRE on it'}
end
local t = redis.call('TYPE', reply)['ok']
if t ~= 'none' and t ~= 'stream' then
  return {-1, 'it holds a ' .. t .. ', not a stream'}
end
local video = video_check(8)
if video then
  return video
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 0
end
local added = redis.pcall('XADD', reply, 'MAXLEN', '~', ARGV[3], '*', 'job_id', ARGV[4], 'result', ARGV[5])
if type(added) == 'table' and added['err'] then
  return {-1, added['err']}
end
if tonumber(ARGV[6]) > 0 then
  redis.call('EXPIRE', reply, ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
video_record(8)
return 1

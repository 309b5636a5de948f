-- Recording one answered frame of a tracked video (DESIGN §13), in the same atomic step as its
-- result (publish.lua) or its dead letter (dead_letter.lua): the worker puts these functions on
-- top of both. `video_check` runs with the other checks, before the first write; `video_record`
-- after the step's writes. Ten arguments from index b:
--   [b] the video's state hash, [b+1] its frames hash, [b+2] the shard's open-videos sorted set,
--   [b+3] the shard's tracking-job stream (all in the job stream's slot: the video's shard tag),
--   [b+4] video_id ('' = the job is no frame of a tracked video: nothing is checked or recorded),
--   [b+5] the video object as the worker wrote it (the first one recorded fixes it),
--   [b+6] the video's frame count N, [b+7] frame_number, [b+8] the frame's compact record,
--   [b+9] video.ttl_s.
-- State hash fields: `spec`, `first_ms` (first frame recorded, Redis time), `queued` (complete or
-- expired: a tracking job is queued), `expired`; after the output is written only `done`.
local function video_check(b)
  if ARGV[b + 4] == '' then
    return nil
  end
  local state, frames, open, videos = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  for _, c in ipairs({{'HSET', state, 'spec', ''}, {'HSET', frames, '0', ''}, {'ZADD', open, '0', 'v'},
                      {'ZREM', open, 'v'}, {'XADD', videos, '*', 'video_id', ''},
                      {'EXPIRE', state, '1'}, {'EXPIRE', frames, '1'}}) do
    if not redis.acl_check_cmd(unpack(c)) then
      return redis.error_reply('NOPERM this user may not run ' .. c[1] .. ' on ' .. c[2])
    end
  end
  for _, kt in ipairs({{state, 'hash'}, {frames, 'hash'}, {open, 'zset'}, {videos, 'stream'}}) do
    local t = redis.call('TYPE', kt[1])['ok']
    if t ~= 'none' and t ~= kt[2] then
      return redis.error_reply('WRONGTYPE ' .. kt[1] .. ' holds a ' .. t .. ', not a ' .. kt[2])
    end
  end
  local spec = redis.call('HGET', state, 'spec')
  if spec and spec ~= ARGV[b + 5] then
    return {-2, spec}
  end
  return nil
end

local function video_record(b)
  local id = ARGV[b + 4]
  if id == '' then
    return
  end
  local state, frames, open, videos = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  if redis.call('HEXISTS', state, 'queued') == 1 or redis.call('HEXISTS', state, 'done') == 1 then
    -- Complete already (queued for tracking, or tracked): a late duplicate counts once.
    return
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local ttl = tonumber(ARGV[b + 9])
  redis.call('HSETNX', state, 'spec', ARGV[b + 5])
  redis.call('HSETNX', state, 'first_ms', now)
  redis.call('HSET', frames, ARGV[b + 7], ARGV[b + 8])
  -- A margin past the expiry, so nothing is left behind should every worker be gone.
  redis.call('EXPIRE', state, ttl * 2 + 3600)
  redis.call('EXPIRE', frames, ttl * 2 + 3600)
  if redis.call('HLEN', frames) >= tonumber(ARGV[b + 6]) then
    redis.call('HSET', state, 'queued', now)
    redis.call('ZREM', open, id)
    redis.call('XADD', videos, '*', 'video_id', id)
  else
    redis.call('ZADD', open, now + ttl * 1000, id)
  end
end


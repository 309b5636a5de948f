-- Expires the shard's videos whose frames stopped coming (DESIGN §13): each open video past its
-- deadline gets a tracking job marked `expired` (its output: the frames it got, and a `done`
-- entry of status `expired`). Atomic per call, so a video expires once however many workers
-- sweep, and never after its last frame made it complete.
-- KEYS[1] the shard's open-videos sorted set, KEYS[2] its tracking-job stream
-- ARGV[1] the state-hash key of a video without its id (`<tag>:video:`), ARGV[2] most videos
-- expired per call.
-- Returns the number of videos expired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local state = ARGV[1] .. id
  if redis.call('HEXISTS', state, 'spec') == 1 and redis.call('HEXISTS', state, 'queued') == 0 then
    redis.call('HSET', state, 'queued', now, 'expired', '1')
    redis.call('XADD', KEYS[2], '*', 'video_id', id, 'expired', '1')
    n = n + 1
  end
end
return n

#!lua flags=allow-oom
-- Deliver entries of the job stream to this consumer, each bounded before it leaves Redis: the
-- worker never holds more of an entry than its limits, whatever a producer wrote (a 200 MB side
-- field, a 4 MiB field name, thousands of fields). Never blocks (a script cannot): the worker
-- polls while the stream is empty. `allow-oom`: reading adds nothing (it must work while Redis
-- is out of memory, so the worker can drain it).
-- KEYS[1] job stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] mode:
--   'new'   XREADGROUP COUNT ARGV[4] ... '>': entries never delivered;
--   'claim' XCLAIM min-idle ARGV[4] of entry ARGV[5]: an orphan, only if still idle that long
--           (when it is gone from the stream it is acknowledged, and the answer is 'gone').
-- ARGV[6] the most bytes of `job` sent (its limit; a longer one is cut to ARGV[8] bytes),
-- ARGV[7] the most bytes of `image` sent (its limit; a longer one is not sent),
-- ARGV[8] the most bytes of any other value sent (a longer one is not sent),
-- ARGV[9] the most bytes of a field name (a longer one is cut, with a note of its length),
-- ARGV[10] the most fields sent besides `job` and `image` (the rest are counted).
-- Returns a list of entries, each {id, bytes of names and values in all, fields not sent,
-- {name, value, length of the value in Redis, ...}}: a value shorter than its length was cut.
local group, consumer, mode = ARGV[1], ARGV[2], ARGV[3]
local max_job, max_image, max_other = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local max_name, max_fields = tonumber(ARGV[9]), tonumber(ARGV[10])

local function bounded(id, kv)
  local out, size, sent, unsent = {}, 0, 0, 0
  local job_seen, image_seen = false, false
  for i = 1, #kv, 2 do
    local k, v = kv[i], kv[i + 1]
    size = size + #k + #v
    local value
    if k == 'job' and not job_seen then
      job_seen = true
      value = #v <= max_job and v or string.sub(v, 1, max_other)
    elseif k == 'image' and not image_seen then
      image_seen = true
      value = #v <= max_image and v or ''
    elseif sent < max_fields then
      sent = sent + 1
      value = #v <= max_other and v or ''
    end
    if value then
      if #k > max_name then
        k = string.sub(k, 1, max_name) .. '...<' .. #k .. ' bytes>'
      end
      out[#out + 1] = k
      out[#out + 1] = value
      out[#out + 1] = #v
    else
      unsent = unsent + 1
    end
  end
  return {id, size, unsent, out}
end

local function denied(...)
  if not redis.acl_check_cmd(...) then
    return redis.error_reply('NOPERM this user may not run ' .. select(1, ...) .. ' on the job stream ' .. KEYS[1])
  end
end
local refused
if mode == 'new' then
  refused = denied('XREADGROUP', 'GROUP', group, consumer, 'COUNT', '1', 'STREAMS', KEYS[1], '>')
else
  refused = denied('XCLAIM', KEYS[1], group, consumer, '0', '0-1') or denied('XACK', KEYS[1], group, '0-1')
end
if refused then
  return refused
end
local entries
if mode == 'new' then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[4], 'STREAMS', KEYS[1], '>')
  entries = r and r[1] and r[1][2] or {}
else
  entries = redis.call('XCLAIM', KEYS[1], group, consumer, ARGV[4], ARGV[5])
  if #entries == 0 then
    if #redis.call('XRANGE', KEYS[1], ARGV[5], ARGV[5]) == 0 then
      redis.call('XACK', KEYS[1], group, ARGV[5])
      return 'gone'
    end
    return {}
  end
end
local out = {}
for _, e in ipairs(entries) do
  if type(e[2]) == 'table' then
    out[#out + 1] = bounded(e[1], e[2])
  end
end
return out

#!lua flags=allow-oom
-- Release entries this worker will not run (read as it stopped, or left at the end of the
-- grace period): they stay pending on this consumer but look idle for ARGV[3] ms, so any live
-- worker's next claim (XPENDING IDLE + XCLAIM) takes them at once instead of after
-- claim_idle_ms. JUSTID: the delivery count is not raised. Entries no longer this consumer's are left alone.
-- `allow-oom`: it adds nothing, so it works while Redis is out of memory.
-- KEYS[1] job stream
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] idle time to set (ms), ARGV[4..] entry ids;
-- no ids = every entry pending on this consumer (at most 10000).
-- Returns how many entries were released.
local ids = {}
if #ARGV >= 4 then
  for i = 4, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if #p == 1 and p[1][2] == ARGV[2] then
      ids[#ids + 1] = ARGV[i]
    end
  end
else
  for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 10000, ARGV[2])) do
    ids[#ids + 1] = p[1]
  end
end
for _, id in ipairs(ids) do
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
end
return #ids

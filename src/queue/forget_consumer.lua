#!lua flags=allow-oom
-- Remove a consumer from the group, only when it holds no pending entry (XGROUP DELCONSUMER
-- would otherwise drop its entries from the pending list, and nobody would run them again).
-- `allow-oom`: it only removes, so it works while Redis is out of memory.
-- KEYS[1] job stream
-- ARGV[1] group, ARGV[2] consumer
-- Returns 1 when removed, 0 when it still holds entries.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1

#!lua flags=allow-oom
-- Renew this worker's leases: reset the idle time of the entries still pending on this consumer
-- (XCLAIM ... JUSTID, which does not count as a delivery). An entry another worker has
-- reclaimed meanwhile (after a long outage, say) is left to it: never stolen back.
-- `allow-oom`: it adds nothing (XCLAIM JUSTID resets an idle time), and leases must hold while
-- Redis is out of memory, or every worker's jobs would be reclaimed by the others.
-- KEYS[1] job stream
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3..] entry ids
-- Returns the ids that are no longer this consumer's (reclaimed elsewhere, or finished).
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost

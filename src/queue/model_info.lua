#!lua
-- Replace the model hash with the given fields, atomically (one key: any cluster slot).
-- KEYS[1] the model hash; ARGV field, value, field, value, ...
redis.call('DEL', KEYS[1])
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return 0

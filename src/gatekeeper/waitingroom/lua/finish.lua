-- ARGV: base, now, ticket, user. Returns 1 if a ready session was ended, else 0.
local now, t, user = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local owner, bucket = record(t)
if owner ~= user then return 0 end
local head = num(redis.call('GET', base .. 'head'))
if t > head then return 0 end
local was_ready = ready_until(t, now) ~= nil
redis.call('ZREM', base .. 'ready', t)
forget(t, owner, bucket)
if was_ready then return 1 end
return 0

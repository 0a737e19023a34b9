-- KEYS[1]: lease key. ARGV: owner. Deletes the lease only if the caller holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0

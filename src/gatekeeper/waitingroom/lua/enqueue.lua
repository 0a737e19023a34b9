-- ARGV: base, now, epoch, live_ttl, items (bucket, user; see items() in _lib.lua).
-- Returns per user: ticket, state (0 queued, 1 ready), position (-1 if none), duplicate (0/1).
local now, e, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local head = num(redis.call('GET', base .. 'head'))
local seq = num(redis.call('GET', base .. 'seq'))
local issued = seq
-- Every gone ticket is above head and below any new ticket: one count serves the batch.
local gone_ahead = redis.call('ZCARD', base .. 'gone')
local out = {}
for bucket, user in items(ARGV[5]) do
  local ukey = base .. 'u:' .. bucket
  local t = num(redis.call('HGET', ukey, user))
  local dup, state, pos = 0, 0, -1
  if t > 0 then
    local owner, b = record(t)
    if owner ~= user then
      t = 0
    elseif t <= head then
      if ready_until(t, now) then dup, state = 1, 1 else forget(t, owner, b); t = 0 end
    else
      dup = 1
    end
  end
  if t == 0 then
    seq = seq + 1
    t = seq
    redis.call('HSET', ukey, user, t)
    redis.call('HSET', tkey(t), t, bucket .. ':' .. user)
    touch(t, e)
    pos = t - head - gone_ahead
  elseif state == 0 then
    touch(t, e)
    pos = position(t, head)
  end
  out[#out + 1] = t
  out[#out + 1] = state
  out[#out + 1] = pos
  out[#out + 1] = dup
end
if seq ~= issued then redis.call('SET', base .. 'seq', seq) end
expire_touched(ttl)
return out

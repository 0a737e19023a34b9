-- ARGV: base, now, epoch, live_ttl, touch (0/1), items (ticket, user; see _lib.lua).
-- Returns per ticket: state (0 queued, 1 ready, 2 gone), position or ready-until (ms), -1 if none.
local now, e, ttl, do_touch = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local head = num(redis.call('GET', base .. 'head'))
local out = {}
for n, user in items(ARGV[6]) do
  local t = tonumber(n)
  local owner = record(t)
  local state, value = 2, -1
  if owner == user then
    if t <= head then
      local u = ready_until(t, now)
      if u then state, value = 1, math.floor(u * 1000) end
    else
      state = 0
      if do_touch == '1' then touch(t, e) end
      value = position(t, head)
    end
  end
  out[#out + 1] = state
  out[#out + 1] = value
end
expire_touched(ttl)
return out

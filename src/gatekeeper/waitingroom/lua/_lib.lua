-- Shared helpers, prepended to every waiting-room script by redis_store.py.
-- Keys of one tenant share the hash tag in `base` ("<prefix>:wr:{tenant}:"), so one script
-- only ever touches one Redis Cluster slot.
local base = ARGV[1]
local function tkey(t) return base .. 't:' .. math.floor(t / 128) end
local function livekey(e, t) return base .. 'live:' .. e .. ':' .. math.floor(t / 65536) end
local function num(v) return tonumber(v or '0') or 0 end

-- The record of ticket t is "<bucket>:<user>"; returns user, bucket (nil if none).
local function record(t)
  local rec = redis.call('HGET', tkey(t), t)
  if not rec then return nil end
  local colon = string.find(rec, ':', 1, true)
  return string.sub(rec, colon + 1), string.sub(rec, 1, colon - 1)
end

-- Forget ticket t: its record and, if it still points at t, the user's map entry.
local function forget(t, user, bucket)
  redis.call('HDEL', tkey(t), t)
  local ukey = base .. 'u:' .. bucket
  if num(redis.call('HGET', ukey, user)) == t then redis.call('HDEL', ukey, user) end
end

-- Mark t alive in epoch e and e + 1 (so that a touch late in e still counts early in e + 1).
-- Each bitmap gets its TTL once per script call (see expire_touched), not once per touch.
local touched = {}
local function touch(t, e)
  local off = t % 65536
  for d = 0, 1 do
    local k = livekey(e + d, t)
    redis.call('SETBIT', k, off, 1)
    touched[k] = true
  end
end
local function expire_touched(ttl)
  for k in pairs(touched) do redis.call('EXPIRE', k, ttl) end
end

local function alive(t, e)
  return redis.call('GETBIT', livekey(e, t), t % 65536) == 1
end

local function position(t, head)
  return t - head - redis.call('ZCOUNT', base .. 'gone', head + 1, t - 1)
end

-- Ready until (epoch seconds), or nil if t is not ready at `now`.
local function ready_until(t, now)
  local s = redis.call('ZSCORE', base .. 'ready', t)
  if s and tonumber(s) > now then return tonumber(s) end
  return nil
end

-- Batch items packed into one argument as "<number>:<byte length>:<user>" back to back (user
-- ids may hold any byte, so they are length-prefixed). Yields number (as a string), user.
local function items(packed)
  local pos, size = 1, #packed
  return function()
    if pos > size then return nil end
    local c1 = string.find(packed, ':', pos, true)
    local c2 = string.find(packed, ':', c1 + 1, true)
    local n = string.sub(packed, pos, c1 - 1)
    local last = c2 + tonumber(string.sub(packed, c1 + 1, c2 - 1))
    pos = last + 1
    return n, string.sub(packed, c2 + 1, last)
  end
end

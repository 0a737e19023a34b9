#!lua flags=allow-cross-slot-keys
-- Give back debits that decide.lua made: the compensation step of a group whose checks live
-- on different Redis Cluster nodes (reserve on each node in a fixed order; if one denies,
-- refund the others). Best effort by nature: state may have moved on since the debit.
--
-- KEYS: one routing key of the node (see decide.lua on why keys travel in ARGV).
-- ARGV[1]: the time (microseconds) decide.lua used for the debit on this node.
-- ARGV[2]: the number n of debited checks; ARGV[3 .. 2+n]: their keys.
-- then 7 fields per check, as for decide.lua.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])

local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function fmt(x)
  return string.format('%.0f', x)
end

-- States as decide.lua writes them: a zero byte then '<dd' / '<ddd' doubles, or (written by
-- earlier versions) integers as decimal text.
local function load(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  if string.byte(v, 1) == 0 then
    if #v == 17 then
      local a, b = struct.unpack('<dd', v, 2)
      return {a, b}
    end
    local a, b, c = struct.unpack('<ddd', v, 2)
    return {a, b, c}
  end
  local s = {}
  for n in string.gmatch(v, '%-?%d+') do s[#s + 1] = tonumber(n) end
  return s
end

local function save(key, s)
  local blob
  if #s == 2 then
    blob = '\0' .. struct.pack('<dd', s[1], s[2])
  else
    blob = '\0' .. struct.pack('<ddd', s[1], s[2], s[3])
  end
  redis.call('SET', key, blob, 'KEEPTTL')
end

for i = 1, n do
  local a = 3 + n + (i - 1) * 7
  local key = ARGV[2 + i]
  local code, limit, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local capacity, cost, lease = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 6]
  local s = nil
  if code <= 4 then s = load(key) end
  if code == 1 and s then
    s[1] = math.min(capacity * period, s[1] + cost * period)
    save(key, s)
  elseif code == 2 and s then
    local back = cost * period
    local whole = idiv(back, limit)
    s[1] = s[1] - whole
    s[2] = s[2] - (back - whole * limit)
    if s[2] < 0 then
      s[2] = s[2] + limit
      s[1] = s[1] - 1
    end
    save(key, s)
  elseif code == 3 and s then
    if s[2] == idiv(now, period) * period then
      s[1] = math.max(0, s[1] - cost)
      save(key, s)
    end
  elseif code == 4 and s then
    local start = idiv(now, period) * period
    if s[3] == start then
      s[2] = math.max(0, s[2] - cost)
      save(key, s)
    elseif s[3] == start + period then
      s[1] = math.max(0, s[1] - cost)
      save(key, s)
    end
  elseif code == 5 then
    -- Entries of one timestamp are numbered 0..n-1 (decide.lua); remove the highest numbers
    -- so that the numbering stays contiguous and the next entry's name stays unique.
    local count = redis.call('ZCOUNT', key, fmt(now), fmt(now))
    for j = count - 1, math.max(0, count - cost), -1 do
      redis.call('ZREM', key, fmt(now) .. ':' .. fmt(j))
    end
  elseif code == 6 then
    redis.call('ZREM', key, lease)
    for j = 2, math.min(cost, limit) do redis.call('ZREM', key, lease .. '#' .. j) end
  end
end
return n

#!lua flags=allow-cross-slot-keys
-- Decide a batch of groups of limit checks atomically: the Lua twin of
-- gatekeeper/limits/algorithms.py (the contract tests compare them decision by decision).
--
-- KEYS: one per check, in order; or (on a Redis Cluster node) one routing key.
-- ARGV[1]: now in microseconds, or "" to use Redis TIME (never a replica's clock)
-- ARGV[2]: the batch's distinct policies, 4 numbers each: algorithm code, limit, period_us
--          (lease ttl_us for concurrency), capacity
-- ARGV[3]: the batch: the number of groups, then per group its number of checks n and n times
--          (policy index, cost, flags: 1 = peek, 2 = shadow)
--          Both are little-endian doubles back to back (struct '<d'): one C call unpacks them,
--          where parsing decimal text cost about 1 us per decision.
-- ARGV[4]: 0 when the keys are KEYS; else the number n of keys in ARGV[5 .. 4+n].
--          Cluster nodes refuse declared KEYS of several slots even for scripts flagged
--          allow-cross-slot-keys, so a node's batch passes its keys here instead.
-- then one lease id per concurrency check, in order.
-- Returns {now, then per check: allowed (0/1), remaining, reset_us, retry_us}.
-- Numbers travel packed in two strings: one argument per check field made the client spend
-- more time packing the command than Redis spent running it.
--
-- String states are a zero byte then their integers as little-endian doubles ('<dd', '<ddd'):
-- struct packs and unpacks them at a third of the cost of formatting and parsing decimal
-- text. States written as text ("123 456", by earlier versions) are still read.
--
-- All numbers are doubles holding integers below 2^53, so every operation is exact;
-- divisions go through idiv, which corrects the rounding of a / b.

local overridden = ARGV[1] ~= ""
local now
if overridden then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Library functions as locals: a global lookup per call costs more than the call.
local floor, min = math.floor, math.min
local byte, unpack_struct, pack_struct = string.byte, struct.unpack, struct.pack
local rcall = redis.call

local function idiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function cdiv(a, b)
  return -idiv(-a, b)
end

local function fmt(x)
  return string.format('%.0f', x)
end

-- A key's TTL: until its state is fully reset. When the caller supplied the time, Redis's
-- own clock no longer matches the state's clock, so keep such keys at least a minute.
local function ttl_ms(reset_us)
  local ms = cdiv(reset_us, 1000)
  if ms < 1 then ms = 1 end
  if overridden and ms < 60000 then ms = 60000 end
  return ms
end

-- String states (token bucket, GCRA, windows): read once per batch (one MGET for the whole
-- batch on a single node), written back at the end; except a lone token-bucket or
-- sliding-window check on a key not decided yet in the batch (the hot case, see the main
-- loop), whose state is written at once and its new value kept in `fetched`.
local states = {}
local fetched = {}
local dirty, dirty_order = {}, {}

local function parse(v)
  if byte(v, 1) == 0 then
    if #v == 17 then
      local a, b = unpack_struct('<dd', v, 2)
      return {a, b}
    end
    local a, b, c = unpack_struct('<ddd', v, 2)
    return {a, b, c}
  end
  local x, y, z = string.match(v, '^(%-?%d+) (%-?%d+) (%-?%d+)$')
  if x then return {tonumber(x), tonumber(y), tonumber(z)} end
  x, y = string.match(v, '^(%-?%d+) (%-?%d+)$')
  if x then return {tonumber(x), tonumber(y)} end
  local s = {}
  for n in string.gmatch(v, '%-?%d+') do s[#s + 1] = tonumber(n) end
  return s
end

local function load(key)
  local s = states[key]
  if s == nil then
    local v = fetched[key]
    if v == nil then v = rcall('GET', key) end
    s = false
    if v then s = parse(v) end
    states[key] = s
  end
  return s
end

local function store(key, s, reset)
  states[key] = s
  if not dirty[key] then dirty_order[#dirty_order + 1] = key end
  dirty[key] = ttl_ms(reset)
end

-- The common core of token bucket and GCRA, on the deficit in scaled units.
local function bucket(deficit, limit, period, capacity, cost)
  local full = capacity * period
  local need = cost * period
  if cost <= capacity and deficit + need <= full then
    local after = deficit + need
    return 1, idiv(full - after, period), cdiv(after, limit), 0, after
  end
  local reset = cdiv(deficit, limit)
  local remaining = 0
  if deficit < full then remaining = idiv(full - deficit, period) end
  local retry
  if cost > capacity then retry = reset else retry = cdiv(deficit + need - full, limit) end
  return 0, remaining, reset, retry, nil
end

-- Each algorithm returns allowed, remaining, reset, retry, commit: nil, the new state of a
-- string state (a table; stored under the key with the returned reset), or a function (the
-- sorted-set algorithms). Commits wait until the group is known to pass.

-- A token bucket's deficit (scaled units) and the state's time, from its stored tokens and
-- last refill time.
local function tb_deficit(tokens, last, limit, period, capacity)
  local deficit, t = capacity * period - tokens, now
  if now > last and deficit > 0 then
    if now - last >= cdiv(deficit, limit) then
      deficit = 0
    else
      deficit = deficit - (now - last) * limit
    end
  end
  if now < last then t = last end
  return deficit, t
end

local function token_bucket(key, limit, period, capacity, cost)
  local s = load(key)
  local deficit, t = 0, now
  if s then deficit, t = tb_deficit(s[1], s[2], limit, period, capacity) end
  local a, rem, reset, retry, after = bucket(deficit, limit, period, capacity, cost)
  if after and cost > 0 then return a, rem, reset, retry, {capacity * period - after, t} end
  return a, rem, reset, retry, nil
end

local function gcra(key, limit, period, capacity, cost)
  local s = load(key)
  local deficit = 0
  if s and s[1] >= now then deficit = (s[1] - now) * limit + s[2] end
  local a, rem, reset, retry, after = bucket(deficit, limit, period, capacity, cost)
  if after and cost > 0 then
    local whole = idiv(after, limit)
    return a, rem, reset, retry, {now + whole, after - whole * limit}
  end
  return a, rem, reset, retry, nil
end

local function fixed_window(key, limit, period, cost)
  local s = load(key)
  local start = now - (now - idiv(now, period) * period)
  local count = 0
  if s and s[2] == start then count = s[1] end
  local window_end = start + period - now
  if count + cost <= limit then
    count = count + cost
    local reset = 0
    if count > 0 then reset = window_end end
    if cost > 0 then return 1, limit - count, reset, 0, {count, start} end
    return 1, limit - count, reset, 0, nil
  end
  local reset = 0
  if count > 0 then reset = window_end end
  if cost > limit then return 0, limit - count, reset, reset, nil end
  return 0, limit - count, reset, window_end, nil
end

-- The sliding-window counter's decision from its stored counts (previous window, current
-- window, start of the current window; nil for no state). The new state, when the hit is
-- debited, comes back as its three numbers after the usual four values.
local function sliding_core(sprev, scur, sstart, limit, period, cost)
  local start = idiv(now, period) * period
  local elapsed = now - start
  local prev, cur = 0, 0
  if sstart == start then
    prev, cur = sprev, scur
  elseif sstart == start - period then
    prev = scur
  end
  -- The previous window's share rounded down (algorithms.py says why).
  local used = idiv(prev * (period - elapsed), period)
  local allowed = 0
  if cur + cost + used <= limit then
    cur = cur + cost
    allowed = 1
  end
  local remaining = limit - cur - used
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if cur > 0 then
    reset = start + 2 * period - now
  elseif prev > 0 then
    reset = start + period - now
  end
  if allowed == 1 then
    if cost > 0 then return 1, remaining, reset, 0, prev, cur, start end
    return 1, remaining, reset, 0, nil
  end
  if cost > limit then return 0, remaining, reset, reset, nil end
  local free = limit - cur - cost
  if free >= 0 and prev > 0 then
    local at = period - cdiv((free + 1) * period, prev) + 1
    if at < period then return 0, remaining, reset, start + at - now, nil end
  end
  local wait = 0
  if cur > 0 then wait = period - cdiv((limit - cost + 1) * period, cur) + 1 end
  if wait < 0 then wait = 0 end
  if wait < period then return 0, remaining, reset, start + period + wait - now, nil end
  return 0, remaining, reset, start + 2 * period - now, nil
end

local function sliding_window(key, limit, period, cost)
  local s = load(key)
  local a, rem, reset, retry, prev, cur, start
  if s then
    a, rem, reset, retry, prev, cur, start = sliding_core(s[1], s[2], s[3], limit, period, cost)
  else
    a, rem, reset, retry, prev, cur, start = sliding_core(0, 0, nil, limit, period, cost)
  end
  if prev then return a, rem, reset, retry, {prev, cur, start} end
  return a, rem, reset, retry, nil
end

local function zscore_at(key, index)
  local r = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  return tonumber(r[2])
end

local function zadd_all(key, scores, members)
  -- ZADD in chunks: unpack() of thousands of arguments would overflow Lua's C stack.
  local i = 1
  while i <= #members do
    local args = {}
    for j = i, math.min(i + 499, #members) do
      args[#args + 1] = scores[j]
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', key, unpack(args))
    i = i + 500
  end
end

local function sliding_log(key, limit, period, cost)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - period))
  local count = redis.call('ZCARD', key)
  local last = nil
  if count > 0 then last = zscore_at(key, -1) end
  if count + cost <= limit then
    if cost > 0 and (last == nil or last < now) then last = now end
    count = count + cost
    local reset = 0
    if last then reset = last + period - now end
    local commit = nil
    if cost > 0 then
      commit = function()
        -- Members are unique: entries of one timestamp are numbered from how many exist,
        -- and expiry removes all entries of a timestamp at once.
        local first = redis.call('ZCOUNT', key, fmt(now), fmt(now))
        local scores, members = {}, {}
        for j = 0, cost - 1 do
          scores[#scores + 1] = fmt(now)
          members[#members + 1] = fmt(now) .. ':' .. fmt(first + j)
        end
        zadd_all(key, scores, members)
        redis.call('PEXPIRE', key, ttl_ms(reset))
      end
    end
    return 1, limit - count, reset, 0, commit
  end
  local reset = 0
  if last then reset = last + period - now end
  if cost > limit then return 0, limit - count, reset, reset, nil end
  return 0, limit - count, reset, zscore_at(key, count - limit + cost - 1) + period - now, nil
end

local function concurrency(key, limit, ttl, cost, lease)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local count = redis.call('ZCARD', key)
  local members = {}
  if cost > 0 then
    members[1] = lease
    for i = 2, math.min(cost, limit + 1) do members[#members + 1] = lease .. '#' .. i end
  end
  local needed = 0
  for _, m in ipairs(members) do
    if not redis.call('ZSCORE', key, m) then needed = needed + 1 end
  end
  local latest = nil
  if count > 0 then latest = zscore_at(key, -1) end
  if count + needed <= limit and cost <= limit then
    count = count + needed
    if cost > 0 and (latest == nil or latest < now + ttl) then latest = now + ttl end
    local reset = 0
    if latest then reset = latest - now end
    local commit = nil
    if cost > 0 then
      commit = function()
        local scores = {}
        for j = 1, #members do scores[j] = fmt(now + ttl) end
        zadd_all(key, scores, members)
        redis.call('PEXPIRE', key, ttl_ms(reset))
      end
    end
    return 1, limit - count, reset, 0, commit
  end
  local reset = 0
  if latest then reset = latest - now end
  if cost > limit then return 0, limit - count, reset, reset, nil end
  return 0, limit - count, reset, zscore_at(key, count + needed - limit - 1) - now, nil
end

local function evaluate(key, code, limit, period, capacity, cost, lease)
  if code == 1 then return token_bucket(key, limit, period, capacity, cost) end
  if code == 2 then return gcra(key, limit, period, capacity, cost) end
  if code == 3 then return fixed_window(key, limit, period, cost) end
  if code == 4 then return sliding_window(key, limit, period, cost) end
  if code == 5 then return sliding_log(key, limit, period, cost) end
  if code == 6 then return concurrency(key, limit, period, cost, lease) end
  error('unknown algorithm code ' .. tostring(code))
end

local function numbers(blob)
  -- In chunks: every unpacked value takes a slot of Lua's C stack.
  local out = {}
  local count = #blob / 8
  local pos, done = 1, 0
  while done < count do
    local m = math.min(200, count - done)
    local values = {struct.unpack('<' .. string.rep('d', m), blob, pos)}
    for j = 1, m do out[done + j] = values[j] end
    pos = values[m + 1]
    done = done + m
  end
  return out
end

local policies = numbers(ARGV[2])
local batch = numbers(ARGV[3])
local keys = KEYS
local nkeys = tonumber(ARGV[4])
local lease_arg = 5 + nkeys
if nkeys > 0 then
  keys = {}
  for i = 1, nkeys do keys[i] = ARGV[4 + i] end
  -- Touch every key read-only before any write: if one is not served by this node any more
  -- (resharding), fail as a whole so that the caller can refresh its slot map and resend.
  for i = 1, nkeys do
    local r = redis.pcall('EXISTS', keys[i])
    if type(r) == 'table' and r.err then
      return redis.error_reply('TRYAGAIN ' .. r.err)
    end
  end
end

local function apply(key, commit, reset)
  if type(commit) == 'function' then commit() else store(key, commit, reset) end
end

-- On one node, fetch every string state of the batch with one MGET (a call from Lua costs
-- about as much as the algorithm itself). A cluster node refuses a multi-key command across
-- slots even here, so there each key is read by its own GET on first use.
if nkeys == 0 then
  local wanted = {}
  local pos, k = 2, 0
  for _ = 1, batch[1] do
    local n = batch[pos]
    pos = pos + 1
    for _ = 1, n do
      k = k + 1
      if policies[batch[pos] * 4 + 1] <= 4 then wanted[#wanted + 1] = keys[k] end
      pos = pos + 3
    end
  end
  -- MGET in chunks: unpack() of thousands of arguments would overflow Lua's C stack.
  local i = 1
  while i <= #wanted do
    local last = math.min(i + 499, #wanted)
    local values = redis.call('MGET', unpack(wanted, i, last))
    for j = i, last do fetched[wanted[j]] = values[j - i + 1] end
    i = last + 1
  end
end

local out = {now}
local o = 1
local k = 0
local pos = 2
for _ = 1, batch[1] do
  local n = batch[pos]
  pos = pos + 1
  if n == 1 then
    -- The common case, a group of one check: it passes exactly when its check allows.
    k = k + 1
    local p = batch[pos] * 4
    local code = policies[p + 1]
    local lease = ''
    if code == 6 then
      lease = ARGV[lease_arg]
      lease_arg = lease_arg + 1
    end
    local key, limit, period, capacity = keys[k], policies[p + 2], policies[p + 3], policies[p + 4]
    local cost, flags = batch[pos + 1], batch[pos + 2]
    pos = pos + 3
    local a, rem, reset, retry, commit
    local v = fetched[key]
    if flags % 2 == 0 and v ~= nil and states[key] == nil
        and ((code == 1 and (v == false or (#v == 17 and byte(v, 1) == 0)))
          or (code == 4 and (v == false or (#v == 25 and byte(v, 1) == 0)))) then
      -- The hot case without tables or deferred writes: a token bucket or sliding window
      -- (not a peek) that this batch has not decided yet, with its binary state (or none)
      -- from the MGET. Its state is written at once and kept in `fetched` for a later check
      -- of the same key in this batch.
      local blob
      if code == 1 then
        local deficit, t = 0, now
        if v then
          local tokens, last = unpack_struct('<dd', v, 2)
          deficit, t = tb_deficit(tokens, last, limit, period, capacity)
        end
        local after
        a, rem, reset, retry, after = bucket(deficit, limit, period, capacity, cost)
        if after and cost > 0 then blob = pack_struct('<Bdd', 0, capacity * period - after, t) end
      else
        local p1, p2, p3 = 0, 0, nil
        if v then p1, p2, p3 = unpack_struct('<ddd', v, 2) end
        a, rem, reset, retry, p1, p2, p3 = sliding_core(p1, p2, p3, limit, period, cost)
        if p1 then blob = pack_struct('<Bddd', 0, p1, p2, p3) end
      end
      if blob then
        rcall('SET', key, blob, 'PX', ttl_ms(reset))
        fetched[key] = blob
      end
    else
      a, rem, reset, retry, commit = evaluate(key, code, limit, period, capacity, cost, lease)
    end
    if a == 1 and flags % 2 == 1 and cost > 0 then
      -- A peek reports the state as it is, not as the debit would leave it.
      a, rem, reset, retry = evaluate(key, code, limit, period, capacity, 0, lease)
      commit = nil
    end
    if commit then apply(key, commit, reset) end
    out[o + 1] = a
    out[o + 2] = rem
    out[o + 3] = reset
    out[o + 4] = retry
    o = o + 4
  else
    local checks, results, commits = {}, {}, {}
    local denied = false
    for i = 1, n do
      k = k + 1
      local p = batch[pos] * 4
      local lease = ''
      if policies[p + 1] == 6 then
        lease = ARGV[lease_arg]
        lease_arg = lease_arg + 1
      end
      local c = {keys[k], policies[p + 1], policies[p + 2], policies[p + 3], policies[p + 4],
        batch[pos + 1], batch[pos + 2], lease}
      pos = pos + 3
      checks[i] = c
      local a, rem, reset, retry, commit = evaluate(c[1], c[2], c[3], c[4], c[5], c[6], c[8])
      if a == 1 and c[7] % 2 == 1 and c[6] > 0 then
        a, rem, reset, retry = evaluate(c[1], c[2], c[3], c[4], c[5], 0, c[8])
        commit = nil
      end
      if a == 0 and c[7] < 2 then denied = true end
      results[i] = {a, rem, reset, retry}
      commits[i] = commit
    end
    for i = 1, n do
      local c = checks[i]
      local r = results[i]
      if denied then
        if r[1] == 1 then
          -- Nothing of a denied group is debited, so it reports the state as it is.
          local _, rem, reset = evaluate(c[1], c[2], c[3], c[4], c[5], 0, c[8])
          r = {1, rem, reset, 0}
        end
      elseif commits[i] then
        apply(c[1], commits[i], r[3])
      end
      out[o + 1] = r[1]
      out[o + 2] = r[2]
      out[o + 3] = r[3]
      out[o + 4] = r[4]
      o = o + 4
    end
  end
end

for _, key in ipairs(dirty_order) do
  local s = states[key]
  local blob
  if #s == 2 then
    blob = pack_struct('<Bdd', 0, s[1], s[2])
  else
    blob = pack_struct('<Bddd', 0, s[1], s[2], s[3])
  end
  rcall('SET', key, blob, 'PX', dirty[key])
end

return out

-- ARGV: base, now, epoch, limit, frequency, ready_ttl, max_catch_up, sweep_budget.
-- Returns: ticks, admitted, skipped, expired, abandoned, head, next_tick (ms).
local now, e = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, freq, ready_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local max_catch_up, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local head = num(redis.call('GET', base .. 'head'))
local seq = num(redis.call('GET', base .. 'seq'))
local gone = base .. 'gone'
local ready = base .. 'ready'
local ticks, admitted, skipped, expired, abandoned = 0, 0, 0, 0, 0

-- 1. Is a tick due? The schedule lives here, so concurrent workers cannot double a tick.
local nxt = tonumber(redis.call('GET', base .. 'next') or '')
if nxt == nil then nxt = now end
if now >= nxt then
  local due = math.floor((now - nxt) / freq) + 1
  ticks = math.min(due, max_catch_up)
  nxt = nxt + due * freq
  redis.call('SET', base .. 'next', string.format('%.6f', nxt))
  -- 2. Walk forward from head: live tickets become ready, gone or silent ones are skipped.
  local want = ticks * limit
  local scan_cap = want + 100000
  local t = head
  while want > 0 and t < seq and scan_cap > 0 do
    t = t + 1
    scan_cap = scan_cap - 1
    local user, bucket = record(t)
    if user == nil then
      skipped = skipped + 1
    elseif alive(t, e) then
      redis.call('ZADD', ready, now + ready_ttl, t)
      admitted = admitted + 1
      want = want - 1
    else
      forget(t, user, bucket)
      skipped = skipped + 1
      abandoned = abandoned + 1
    end
  end
  head = t
  redis.call('SET', base .. 'head', head)
  redis.call('ZREMRANGEBYSCORE', gone, '-inf', head)
  redis.call('RPUSH', base .. 'hist', string.format('%.3f', now) .. ':' .. admitted)
  redis.call('LTRIM', base .. 'hist', -20, -1)
end

-- 3. Ready sessions past their TTL end.
local old = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, 10000)
for _, m in ipairs(old) do
  local t = tonumber(m)
  local user, bucket = record(t)
  if user then forget(t, user, bucket) end
  redis.call('ZREM', ready, m)
  expired = expired + 1
end

-- 4. Sweep ahead for tickets not seen this epoch (bounded work per call), so that positions
--    stop counting people who left long before admission reaches them.
local cur = redis.call('GET', base .. 'sweep')
local pos = head
if cur then
  local colon = string.find(cur, ':', 1, true)
  if tonumber(string.sub(cur, 1, colon - 1)) == e then
    pos = math.max(head, tonumber(string.sub(cur, colon + 1)))
  end
end
while pos < seq and budget > 0 do
  budget = budget - 1
  local first = pos + 1
  local blk = math.floor(first / 65536)
  local last = math.min(seq, blk * 65536 + 65535)
  local k = livekey(e, first)
  local bits = redis.call('STRLEN', k) * 8
  local lo, hi = first % 65536, last % 65536
  local z
  if lo >= bits then
    z = lo
  else
    z = redis.call('BITPOS', k, 0, lo, math.min(hi, bits - 1), 'BIT')
    if z == -1 and hi >= bits then z = bits end
  end
  if z == -1 then
    pos = last
  else
    local t = blk * 65536 + z
    local user, bucket = record(t)
    if user then
      forget(t, user, bucket)
      redis.call('ZADD', gone, t, t)
      abandoned = abandoned + 1
    end
    pos = t
  end
end
redis.call('SET', base .. 'sweep', e .. ':' .. pos)
return {ticks, admitted, skipped, expired, abandoned, head, math.floor(nxt * 1000)}

-- ARGV: base, now. Returns {last ticket, head, |gone|, ready sessions not yet over at now,
-- next tick ('' if none scheduled), history entries "time:admitted"}: one consistent read.
local now = ARGV[2]
return {
  num(redis.call('GET', base .. 'seq')),
  num(redis.call('GET', base .. 'head')),
  redis.call('ZCARD', base .. 'gone'),
  redis.call('ZCOUNT', base .. 'ready', '(' .. now, '+inf'),
  redis.call('GET', base .. 'next') or '',
  redis.call('LRANGE', base .. 'hist', 0, -1),
}

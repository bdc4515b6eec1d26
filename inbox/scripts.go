package inbox

import "github.com/redis/go-redis/v9"

// The scripts touch two keys, the stream (KEYS[1]) and its meta hash
// (KEYS[2]), which share a hash tag so they live in one Redis Cluster slot.
// Stream entry ids are "<offset>-0" and each entry holds the fields
// t (Redis server time in ms at the append), m (application msgID) and
// d (application payload). The meta hash holds e (epoch, decimal) and
// s (last offset given out).

// trimLua drops entries older than the age limit from the head of the
// stream. It reads the head a page at a time and stops at the first entry
// young enough (at most 10 pages per call; the rest goes next time). It
// expects now (ms) and ttl (ms) to be set.
const trimLua = `
local function trim_old(stream, now, ttl)
  local cutoff = now - ttl
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][2]) >= cutoff then
    return
  end
  local start = '-'
  local last = nil
  for _ = 1, 10 do
    local page = redis.call('XRANGE', stream, start, '+', 'COUNT', 100)
    for _, ent in ipairs(page) do
      if tonumber(ent[2][2]) >= cutoff then
        redis.call('XTRIM', stream, 'MINID', ent[1])
        return
      end
      last = ent[1]
    end
    if #page < 100 then
      break
    end
    start = '(' .. last
  end
  if last then
    local off = tonumber(string.match(last, '^(%d+)-'))
    redis.call('XTRIM', stream, 'MINID', string.format('%d-0', off + 1))
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// appendScript appends one or more messages of one user, in order, and
// returns {offset of the first, epoch}; the others follow it densely.
// ARGV: maxlen, ttl ms, meta ttl ms, epoch to use if the inbox has none,
// then a msgID and a payload per message. An inbox without meta (new,
// expired, flushed) starts a new epoch; a stream left from an older epoch
// is deleted first, since its offsets cannot continue.
var appendScript = redis.NewScript(trimLua + `
local e = redis.call('HGET', KEYS[2], 'e')
if not e then
  e = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e)
end
local k = (#ARGV - 4) / 2
local s = redis.call('HINCRBY', KEYS[2], 's', k)
local first = s - k + 1
local now = now_ms()
for i = 0, k - 1 do
  redis.call('XADD', KEYS[1], string.format('%d-0', first + i), 't', now, 'm', ARGV[5 + 2 * i], 'd', ARGV[6 + 2 * i])
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
trim_old(KEYS[1], now, tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {first, e}
`)

// readScript returns {epoch, last offset, first stored offset, entries}
// where entries are at most limit stream entries after offset `after`.
// ARGV: after, limit, ttl ms, meta ttl ms, epoch to use if the inbox has
// none. An inbox without meta gets one now (epoch, offset 0), so the epoch a
// reader is told is the one the next append will use.
var readScript = redis.NewScript(trimLua + `
local m = redis.call('HMGET', KEYS[2], 'e', 's')
local e, s = m[1], tonumber(m[2] or '0')
if not e then
  e = ARGV[5]
  s = 0
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e, 's', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
trim_old(KEYS[1], now_ms(), tonumber(ARGV[3]))
local first = s + 1
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head > 0 then
  first = tonumber(string.match(head[1][1], '^(%d+)-'))
end
local after = tonumber(ARGV[1])
local from = '-'
if after > 0 then
  from = string.format('(%d-0', after)
end
local ents = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[2])
return {e, s, first, ents}
`)

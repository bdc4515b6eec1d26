package session

import "github.com/redis/go-redis/v9"

// Every script reads and writes exactly one key (KEYS[1]), so each works
// unchanged on Redis Cluster. They run with EVALSHA, falling back to EVAL
// when the server does not know the script (e.g. after a restart).

// deleteIfScript deletes KEYS[1] only if it still holds ARGV[1].
// Returns 1 if deleted, else 0.
var deleteIfScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// swapScript sets KEYS[1] to ARGV[1] with a TTL of ARGV[2] milliseconds and
// returns the previous value, or "" if there was none.
var swapScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if prev then
	return prev
end
return ''
`)

// assertScript sets KEYS[1] to ARGV[1] with a TTL of ARGV[2] milliseconds if
// the key is missing or already holds ARGV[1], and leaves it alone if it
// holds anything else. Returns 1 if set, 0 if left alone.
var assertScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
	return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

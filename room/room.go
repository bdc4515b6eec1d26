// Package room keeps room membership in Redis, for rooms that span gates:
// which sessions are in a room, and on which gates they are, so that a push
// to a room crosses the relay once per gate that holds members and each
// gate fans it out to its own members.
//
// Each room is one Redis hash, <prefix>room:{<name>}, so a room lives in
// one slot of a Redis Cluster and every change is one atomic script on one
// key. Its fields:
//
//	s:<session>  the gate that owns the session
//	@            the gates with members and their member counts, one
//	             "<count> <gate>" line each (read by every push; small)
//
// A second key per gate, <prefix>gaterooms:{<gate>}, a set, lists the rooms
// a gate has members in (a room leaves it when the gate's last member
// leaves), so that the members of a gate that died without
// cleaning up can be removed (PurgeGate).
package room

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxNameLen is the longest room name.
const MaxNameLen = 255

// DefaultPrefix starts every key, as the session directory's.
const DefaultPrefix = "zc:"

// ErrInvalid is returned for an empty or too long room name, an empty
// session id or a gate id with a newline.
var ErrInvalid = errors.New("room: invalid argument")

// Store is the room directory. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns a Store on rdb whose keys start with prefix (DefaultPrefix
// when empty). It does not contact Redis.
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix}
}

// Key returns the Redis key of a room.
func (s *Store) Key(room string) string { return s.prefix + "room:{" + room + "}" }

// gateKey returns the key of a gate's room set.
func (s *Store) gateKey(gate string) string { return s.prefix + "gaterooms:{" + gate + "}" }

// CheckName reports whether name can be a room name: 1 to MaxNameLen
// bytes.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: room name must be 1-%d bytes, got %d", ErrInvalid, MaxNameLen, len(name))
	}
	return nil
}

func check(room, sid, gate string) error {
	if err := CheckName(room); err != nil {
		return err
	}
	if sid == "" {
		return fmt.Errorf("%w: empty session", ErrInvalid)
	}
	if gate == "" || strings.ContainsAny(gate, "\n") {
		return fmt.Errorf("%w: gate id %q", ErrInvalid, gate)
	}
	return nil
}

// Lua helpers shared by the scripts: the gate list of field "@".
const luaGates = `
local function loadGates(k)
	local t = {}
	local s = redis.call('HGET', k, '@')
	if s then
		for n, g in string.gmatch(s, '(%d+) ([^\n]+)') do t[g] = tonumber(n) end
	end
	return t
end
local function saveGates(k, t)
	local parts = {}
	for g, n in pairs(t) do
		if n > 0 then parts[#parts + 1] = n .. ' ' .. g end
	end
	if #parts == 0 then
		redis.call('HDEL', k, '@')
	else
		redis.call('HSET', k, '@', table.concat(parts, '\n'))
	end
end
`

// joinScript: KEYS[1] room, ARGV[1] session, ARGV[2] gate. Returns
// {1, emptied} if the session joined, {0, ""} if it was already in;
// emptied is the gate the session moved from if that gate has no member
// of the room left, else "".
var joinScript = redis.NewScript(luaGates + `
local f = 's:' .. ARGV[1]
local old = redis.call('HGET', KEYS[1], f)
if old == ARGV[2] then return {0, ''} end
local t = loadGates(KEYS[1])
local emptied = ''
if old then
	t[old] = (t[old] or 1) - 1
	if t[old] <= 0 then emptied = old end
end
t[ARGV[2]] = (t[ARGV[2]] or 0) + 1
redis.call('HSET', KEYS[1], f, ARGV[2])
saveGates(KEYS[1], t)
return {1, emptied}
`)

// leaveScript: KEYS[1] room, ARGV[1] session. Returns {1, emptied} if the
// session left, {0, ""} if it was not in; emptied is the session's gate if
// it has no member of the room left, else "".
var leaveScript = redis.NewScript(luaGates + `
local f = 's:' .. ARGV[1]
local old = redis.call('HGET', KEYS[1], f)
if not old then return {0, ''} end
redis.call('HDEL', KEYS[1], f)
local t = loadGates(KEYS[1])
t[old] = (t[old] or 1) - 1
saveGates(KEYS[1], t)
if t[old] <= 0 then return {1, old} end
return {1, ''}
`)

// scriptResult reads a join or leave script's {changed, emptied gate}.
func scriptResult(c *redis.Cmd) (changed bool, emptied string, err error) {
	v, err := c.Slice()
	if err != nil {
		return false, "", err
	}
	if len(v) != 2 {
		return false, "", fmt.Errorf("room: unexpected script reply %v", v)
	}
	n, _ := v[0].(int64)
	emptied, _ = v[1].(string)
	return n == 1, emptied, nil
}

// unindex takes room out of gate's room set once the gate has no member
// in it. The set is in another slot than the room, so this cannot be part
// of the script: after the SREM the room's gate list is read again, and a
// member that joined on that gate meanwhile puts the room back (a join
// adds to the set after its script, so either its SADD comes after the
// SREM, or the read sees its member).
func (s *Store) unindex(ctx context.Context, room, gate string) error {
	if err := s.rdb.SRem(ctx, s.gateKey(gate), room).Err(); err != nil {
		return fmt.Errorf("room %s: unindex gate %s: %w", room, gate, err)
	}
	gates, err := s.Gates(ctx, room)
	if err != nil {
		return err
	}
	for _, g := range gates {
		if g.Gate == gate && g.Members > 0 {
			if err := s.rdb.SAdd(ctx, s.gateKey(gate), room).Err(); err != nil {
				return fmt.Errorf("room %s: index gate %s: %w", room, gate, err)
			}
		}
	}
	return nil
}

// purgeScript: KEYS[1] room, ARGV[1] gate. Removes every member on the
// gate; returns how many.
var purgeScript = redis.NewScript(luaGates + `
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
	if string.sub(all[i], 1, 2) == 's:' and all[i + 1] == ARGV[1] then
		redis.call('HDEL', KEYS[1], all[i])
		n = n + 1
	end
end
local t = loadGates(KEYS[1])
t[ARGV[1]] = nil
saveGates(KEYS[1], t)
return n
`)

// Join puts session sid, owned by gate, in room. It reports whether the
// session was not in the room before.
func (s *Store) Join(ctx context.Context, room, sid, gate string) (bool, error) {
	if err := check(room, sid, gate); err != nil {
		return false, err
	}
	joined, emptied, err := scriptResult(joinScript.Run(ctx, s.rdb, []string{s.Key(room)}, sid, gate))
	if err != nil {
		return false, fmt.Errorf("room %s: join: %w", room, err)
	}
	if joined {
		if err := s.rdb.SAdd(ctx, s.gateKey(gate), room).Err(); err != nil {
			return true, fmt.Errorf("room %s: index gate %s: %w", room, gate, err)
		}
	}
	if emptied != "" {
		return joined, s.unindex(ctx, room, emptied)
	}
	return joined, nil
}

// Leave takes session sid out of room. It reports whether it was in.
func (s *Store) Leave(ctx context.Context, room, sid string) (bool, error) {
	if err := check(room, sid, "-"); err != nil {
		return false, err
	}
	left, emptied, err := scriptResult(leaveScript.Run(ctx, s.rdb, []string{s.Key(room)}, sid))
	if err != nil {
		return false, fmt.Errorf("room %s: leave: %w", room, err)
	}
	if emptied != "" {
		return left, s.unindex(ctx, room, emptied)
	}
	return left, nil
}

// GateCount is one gate's share of a room.
type GateCount struct {
	Gate    string
	Members int
}

// Gates returns the gates that hold members of room, with their member
// counts: one HGET.
func (s *Store) Gates(ctx context.Context, room string) ([]GateCount, error) {
	if err := CheckName(room); err != nil {
		return nil, err
	}
	v, err := s.rdb.HGet(ctx, s.Key(room), "@").Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", room, err)
	}
	return parseGates(v), nil
}

// parseGates parses the "<count> <gate>" lines of field "@".
func parseGates(v string) []GateCount {
	var out []GateCount
	for line := range strings.SplitSeq(v, "\n") {
		n, g, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		c, err := strconv.Atoi(n)
		if err != nil || c <= 0 {
			continue
		}
		out = append(out, GateCount{Gate: g, Members: c})
	}
	return out
}

// Members returns the sessions in room and their gates (HGETALL: for
// presence lists, not for every message).
func (s *Store) Members(ctx context.Context, room string) (map[string]string, error) {
	if err := CheckName(room); err != nil {
		return nil, err
	}
	all, err := s.rdb.HGetAll(ctx, s.Key(room)).Result()
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", room, err)
	}
	out := make(map[string]string, len(all))
	for k, v := range all {
		if sid, ok := strings.CutPrefix(k, "s:"); ok {
			out[sid] = v
		}
	}
	return out, nil
}

// PurgeGate removes every member that gate holds from every room it had
// members in, and the gate's room set: for a gate that died without
// leaving its rooms. It returns how many memberships it removed.
func (s *Store) PurgeGate(ctx context.Context, gate string) (int, error) {
	rooms, err := s.rdb.SMembers(ctx, s.gateKey(gate)).Result()
	if err != nil {
		return 0, fmt.Errorf("rooms of gate %s: %w", gate, err)
	}
	total := 0
	for len(rooms) > 0 {
		chunk := rooms[:min(len(rooms), purgeBatch)]
		rooms = rooms[len(chunk):]
		n, err := s.purge(ctx, chunk, gate)
		total += n
		if err != nil {
			return total, err
		}
	}
	if err := s.rdb.Del(ctx, s.gateKey(gate)).Err(); err != nil {
		return total, fmt.Errorf("rooms of gate %s: %w", gate, err)
	}
	return total, nil
}

// purgeBatch is how many rooms one PurgeGate pipeline purges.
const purgeBatch = 256

// purge runs purgeScript on rooms in one pipeline (and the ones Redis did
// not know the script for again, with EVAL, in a second), so a gate with
// members in many rooms costs a round trip per purgeBatch rooms, not per
// room. It returns how many memberships it removed and the first error.
func (s *Store) purge(ctx context.Context, rooms []string, gate string) (int, error) {
	exec := func(eval func(context.Context, redis.Scripter, []string, ...any) *redis.Cmd, rooms []string) []*redis.Cmd {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(rooms))
		for i, r := range rooms {
			cmds[i] = eval(ctx, pipe, []string{s.Key(r)}, gate)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		return cmds
	}
	cmds := exec(purgeScript.EvalSha, rooms)
	var again []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		sub := make([]string, len(again))
		for j, i := range again {
			sub[j] = rooms[i]
		}
		for j, c := range exec(purgeScript.Eval, sub) {
			cmds[again[j]] = c
		}
	}
	total := 0
	var first error
	for i, c := range cmds {
		n, err := c.Int()
		if err != nil {
			if first == nil {
				first = fmt.Errorf("room %s: purge gate %s: %w", rooms[i], gate, err)
			}
			continue
		}
		total += n
	}
	return total, first
}

// onlineKey is the hash of gates' logged-in session counts.
func (s *Store) onlineKey() string { return s.prefix + "online" }

// SetOnline publishes how many sessions are logged in on gate.
func (s *Store) SetOnline(ctx context.Context, gate string, n int) error {
	return s.rdb.HSet(ctx, s.onlineKey(), gate, n).Err()
}

// Online returns every gate's last published count of logged-in sessions.
func (s *Store) Online(ctx context.Context) (map[string]int, error) {
	all, err := s.rdb.HGetAll(ctx, s.onlineKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("online counts: %w", err)
	}
	out := make(map[string]int, len(all))
	for g, v := range all {
		n, _ := strconv.Atoi(v)
		out[g] = n
	}
	return out, nil
}

// ForgetOnline drops the counts of gates that are gone.
func (s *Store) ForgetOnline(ctx context.Context, gates ...string) error {
	if len(gates) == 0 {
		return nil
	}
	return s.rdb.HDel(ctx, s.onlineKey(), gates...).Err()
}

// Package redislog sends go-redis's own log lines through log/slog.
//
// go-redis v9 logs a few events itself (a connection pool that failed to
// dial, a fallback in its protocol negotiation) through one logger per
// process, set with redis.SetLogger; by default it prints them raw on stderr
// ("redis: ... pool.go:426: redis: connection pool: failed to dial after 5
// attempts: ..."), several times before the caller's own error comes back.
// zcluster reports those failures itself, as one line naming the store and
// the cause, so Install hands go-redis's lines to slog.Default() at debug
// level: hidden at the default info level, there with --log-level debug, in
// the process's own format.
package redislog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Install makes go-redis log through slog.Default() at debug level.
//
// redis.SetLogger sets a variable of go-redis that every client in the
// process reads without a lock, so call Install from main before any Redis
// client is created. Calling it again is harmless (it sets the same
// stateless logger). The logger looks up slog.Default() on every line, so it
// follows a default logger set after Install.
func Install() { redis.SetLogger(Logger{}) }

// Logger implements go-redis's logging interface on slog.Default().
type Logger struct{}

// Printf logs one go-redis line at debug level, with component=redis.
func (Logger) Printf(ctx context.Context, format string, v ...any) {
	l := slog.Default()
	if !l.Enabled(ctx, slog.LevelDebug) {
		return
	}
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	l.DebugContext(ctx, msg, "component", "redis")
}

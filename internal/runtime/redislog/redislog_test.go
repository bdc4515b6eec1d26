package redislog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestLoggerWritesDebugThroughSlog: a go-redis line lands in slog's default
// logger at debug level with component=redis, and nowhere at info level.
func TestLoggerWritesDebugThroughSlog(t *testing.T) {
	saved := slog.Default()
	t.Cleanup(func() { slog.SetDefault(saved) })

	var buf bytes.Buffer
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	Logger{}.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "refused")
	if buf.Len() != 0 {
		t.Fatalf("logged at info level: %q", buf.String())
	}

	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	Logger{}.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "refused")
	got := buf.String()
	for _, want := range []string{"level=DEBUG", `msg="connection pool: failed to dial after 5 attempts: refused"`, "component=redis"} {
		if !strings.Contains(got, want) {
			t.Errorf("line %q lacks %q", got, want)
		}
	}
}

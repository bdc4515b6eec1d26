package zcluster

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// newLogHandler returns the slog handler for --log-format (text or json)
// writing to w at level.
func newLogHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "text", "":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: want text or json", format)
}

// buildLogger builds the logger of --log-level and --log-format on w.
func buildLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lv, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	h, err := newLogHandler(w, format, lv)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

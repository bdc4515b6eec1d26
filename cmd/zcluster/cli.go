package main

import (
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zcluster/zcluster"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
)

const (
	// startTimeout bounds how long the demo cluster may take to start.
	startTimeout = 30 * time.Second
	// shutdownTimeout bounds the demo cluster's clean stop.
	shutdownTimeout = 15 * time.Second
)

// chatApp is the chat application (examples/chat): --app chat.
func chatApp() zcluster.App {
	return zcluster.App{
		Name:    "chat",
		Gate:    func(g *gate.Gate) error { chat.SetupGate(g); return nil },
		Backend: chat.SetupBackend,
		Groups:  []string{chat.GroupIM, chat.GroupEcho},
	}
}

// options are the zcluster binary's additions to the entry point: its
// name and the chat-specific commands.
func options() []zcluster.Option {
	return []zcluster.Option{
		zcluster.WithName("zcluster"),
		zcluster.WithCommand(bind(newDemoCmd)),
		zcluster.WithCommand(bind(newChatCmd)),
		zcluster.WithCommand(bind(newBenchCmd)),
	}
}

// cli is what this binary's own commands use of the entry point's Env.
type cli struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	logLevel  string
	logFormat string
	log       *slog.Logger
}

// bind adapts a command built around a cli to zcluster.WithCommand: the
// cli is filled from env just before the command runs, when the logger of
// --log-level and --log-format exists.
func bind(build func(*cli) *cobra.Command) func(*zcluster.Env) *cobra.Command {
	return func(env *zcluster.Env) *cobra.Command {
		c := &cli{}
		cmd := build(c)
		runE := cmd.RunE
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			*c = cli{
				stdin: env.Stdin(), stdout: env.Stdout(), stderr: env.Stderr(),
				logLevel: env.LogLevel(), logFormat: env.LogFormat(), log: env.Logger(),
			}
			return runE(cmd, args)
		}
		return cmd
	}
}

func annotateEnv(fs *pflag.FlagSet) { zcluster.AnnotateEnv(fs) }

func parseLevel(s string) (slog.Level, error) { return zcluster.ParseLogLevel(s) }

func newLogHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	return zcluster.NewLogHandler(w, format, level)
}

func version() string { return zcluster.Version() }

// oneLine folds a message onto one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

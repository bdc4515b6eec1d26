// Package zcluster is the entry point of a server built on zcluster: Main
// turns an App (the handlers of its gates and backends) into a binary with
// every command, flag, environment variable, config file key, metric,
// health endpoint, log format and signal behaviour of the zcluster binary:
//
//	func main() {
//		zcluster.Main(zcluster.App{Name: "game", Backend: setupGame})
//	}
//
// gives a binary with these commands:
//
//	game gate    --listen :18001 --relay :19001 --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379 --secret S
//	game backend --group game --relay :19101 --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379 --secret S
//	game demo      (the whole cluster in one process, for trying it out)
//	game top | routes | health | version
//
// Every flag also reads the environment variable ZC_<FLAG> (upper case,
// dashes as underscores: --etcd-prefix is ZC_ETCD_PREFIX); gate and backend
// also read the YAML file named by --config, keyed by flag name. A flag
// given on the command line wins over the environment, which wins over the
// file, which wins over the default. Every failure is reported as one line
// on stderr with a non-zero exit status. SIGINT and SIGTERM stop a node
// cleanly within 15 seconds.
package zcluster

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zcluster/zcluster/internal/runtime/redislog"
)

// Main runs the command line of a binary serving app and exits with its
// status. SIGINT and SIGTERM end the command (a node shuts down cleanly).
// The binary's name in usage and error lines is the program's file name
// unless WithName says otherwise.
func Main(app App, opts ...Option) {
	// go-redis logs through one process-wide logger: route it through slog
	// (debug level) before any client exists, instead of its raw stderr
	// lines (see internal/runtime/redislog).
	redislog.Install()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	all := append([]Option{WithName(filepath.Base(os.Args[0])), withProcessLogger()}, opts...)
	code := Run(ctx, os.Args[1:], app, all...)
	stop()
	os.Exit(code)
}

// Run runs the command line args (without the program name) of a binary
// serving app until it finishes or ctx ends, and returns the exit status.
// It reads the process's environment and standard streams unless options
// say otherwise. Main is Run plus signals and os.Exit.
func Run(ctx context.Context, args []string, app App, opts ...Option) int {
	all := append([]Option{WithApp(app)}, opts...)
	return run(ctx, args, os.LookupEnv, os.Stdin, os.Stdout, os.Stderr, all...)
}

// WithName names the binary in usage, examples and error lines.
func WithName(name string) Option {
	return func(c *cli) {
		if name != "" {
			c.name = name
		}
	}
}

// WithApp adds an application that --app can select; the first one given
// (Run's app) is the default.
func WithApp(app App) Option {
	return func(c *cli) { c.apps = append(c.apps, app) }
}

// WithCommand adds a command of the binary's own, replacing a built-in
// command of the same name. build is called once when the command tree is
// built; the Env it gets gives the command the binary's streams and, once
// the command runs, its logger.
func WithCommand(build func(*Env) *cobra.Command) Option {
	return func(c *cli) { c.commands = append(c.commands, build) }
}

// WithStdio replaces the process's standard streams (for tests).
func WithStdio(stdin io.Reader, stdout, stderr io.Writer) Option {
	return func(c *cli) { c.stdin, c.stdout, c.stderr = stdin, stdout, stderr }
}

// WithLookupEnv replaces os.LookupEnv as the source of ZC_* variables (for
// tests).
func WithLookupEnv(lookup func(string) (string, bool)) Option {
	return func(c *cli) { c.lookupEnv = lookup }
}

// Env is what a command added with WithCommand shares with the built-in
// ones: the binary's streams, its logger and its applications.
type Env struct{ c *cli }

// Name is the binary's name.
func (e *Env) Name() string { return e.c.name }

// Stdin is the binary's standard input.
func (e *Env) Stdin() io.Reader { return e.c.stdin }

// Stdout is the binary's standard output.
func (e *Env) Stdout() io.Writer { return e.c.stdout }

// Stderr is the binary's standard error, where logs go.
func (e *Env) Stderr() io.Writer { return e.c.stderr }

// Logger is the logger of --log-level and --log-format. It is set once the
// command runs (before its RunE); before that it is nil.
func (e *Env) Logger() *slog.Logger { return e.c.log }

// LogLevel is the value of --log-level.
func (e *Env) LogLevel() string { return e.c.logLevel }

// LogFormat is the value of --log-format.
func (e *Env) LogFormat() string { return e.c.logFormat }

// Apps are the binary's applications, the default first.
func (e *Env) Apps() []App { return append([]App(nil), e.c.apps...) }

// AnnotateEnv appends the name of each flag's environment variable
// (ZC_<FLAG>) to its usage text. The variables are read for every command
// whether or not its flags are annotated.
func AnnotateEnv(fs *pflag.FlagSet) { annotateEnv(fs) }

// ParseLogLevel parses a --log-level value: debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) { return parseLevel(s) }

// NewLogHandler returns the slog handler of a --log-format value (text or
// json) writing to w at level.
func NewLogHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	return newLogHandler(w, format, level)
}

// Version is the version nodes publish in etcd: the one set at build time
// with -ldflags "-X github.com/zcluster/zcluster.buildVersion=v1.2.3", else
// the module version of a `go install`, else "dev".
func Version() string { return version() }

// renameExamples puts the binary's name into every command's examples,
// which are written for "zcluster".
func renameExamples(cmd *cobra.Command, name string) {
	if name == "zcluster" {
		return
	}
	cmd.Example = strings.ReplaceAll(cmd.Example, "zcluster ", name+" ")
	for _, sub := range cmd.Commands() {
		renameExamples(sub, name)
	}
}

package zcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// cli is what every command shares: the process's streams, its environment
// and the logger built from --log-level and --log-format. There is no
// package-level state.
type cli struct {
	lookupEnv func(string) (string, bool)
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer

	logLevel  string
	logFormat string
	log       *slog.Logger

	// processLogger makes the logger slog's default too, so libraries that
	// log through slog.Default (zinx, via zinxkit) use the same format and
	// level. Only main sets it: tests run many commands in one process.
	processLogger bool

	// name is the binary's name in usage and error lines.
	name string
	// apps are the binary's applications, the first the default.
	apps appSet
	// commands add the binary's own commands (WithCommand).
	commands []func(*Env) *cobra.Command
}

// Option adjusts a binary built with Main or Run: its name, more
// applications, more commands, its streams.
type Option func(*cli)

// withProcessLogger makes the command's logger the process-wide slog
// default (see cli.processLogger).
func withProcessLogger() Option { return func(c *cli) { c.processLogger = true } }

// run executes the command line args and returns the exit status. Errors are
// printed as one line on stderr, prefixed with the binary's name
// ("zcluster: " unless an option names it otherwise).
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer, opts ...Option) (code int) {
	c := &cli{lookupEnv: lookupEnv, stdin: stdin, stdout: stdout, stderr: stderr, name: "zcluster"}
	defer func() {
		// A bug must still end as one line and a non-zero status.
		if r := recover(); r != nil {
			fmt.Fprintf(c.stderr, "%s: internal error: %s\n", c.name, oneLine(fmt.Sprint(r)))
			code = 2
		}
	}()
	for _, o := range opts {
		o(c)
	}
	root := newRootCmd(c)
	root.SetArgs(args)
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(c.stderr, "%s: %s\n", c.name, oneLine(err.Error()))
		return 1
	}
	return 0
}

// newRootCmd builds the command tree.
func newRootCmd(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   c.name,
		Short: "Run a zcluster: gates and backends for the zinx TCP framework, joined by etcd and Redis",
		Long: `zcluster turns the zinx TCP framework into a cluster: client-facing gates
route messages by msgID to backend groups; nodes find each other in etcd;
sessions live in Redis.

Every flag also reads an environment variable, ZC_<FLAG> in upper case with
dashes as underscores (--etcd-prefix is ZC_ETCD_PREFIX). gate and backend
also read a YAML file named by --config whose keys are the flag names. A
flag given on the command line wins over the environment, which wins over
the config file, which wins over the default.`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: c.prepare,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	annotateEnv(root.PersistentFlags())
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
	})
	root.AddCommand(
		newGateCmd(c),
		newBackendCmd(c),
		newVersionCmd(c),
		newTopCmd(c),
		newRoutesCmd(c),
		newHealthCmd(c),
		newDemoCmd(c),
	)
	env := &Env{c: c}
	for _, add := range c.commands {
		cmd := add(env)
		// A command of the binary's own replaces a built-in one of the
		// same name (the chat binary's demo runs its tour).
		for _, old := range root.Commands() {
			if old.Name() == cmd.Name() {
				root.RemoveCommand(old)
			}
		}
		root.AddCommand(cmd)
	}
	renameExamples(root, c.name)
	return root
}

// prepare runs before every command: it fills the flags not given on the
// command line from the environment, then those still unset from the
// --config file (for commands that have one), then builds the logger.
func (c *cli) prepare(cmd *cobra.Command, _ []string) error {
	fs := cmd.Flags()
	if err := applyEnv(fs, c.lookupEnv); err != nil {
		return err
	}
	if f := fs.Lookup(configFlag); f != nil && f.Value.String() != "" {
		if err := applyConfigFile(fs, f.Value.String()); err != nil {
			return err
		}
	}
	log, err := buildLogger(c.stderr, c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	c.log = log
	if c.processLogger {
		slog.SetDefault(log)
	}
	return nil
}

// parseLevel accepts exactly debug, info, warn and error (any case).
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", s)
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

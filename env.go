package zcluster

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// envPrefix starts the name of every flag's environment variable.
const envPrefix = "ZC_"

// envName returns the environment variable that backs a flag:
// "etcd-prefix" -> "ZC_ETCD_PREFIX".
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// annotateEnv appends the environment variable's name to the usage text of
// every flag in fs. Call it once, after the flags are defined.
func annotateEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += " [$" + envName(f.Name) + "]"
	})
}

// applyEnv sets every flag of fs that was not given on the command line from
// its environment variable, when that is set and not empty. So the
// precedence is: command line, then environment, then the flag's default.
// A value the flag rejects is an error naming the variable.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok || v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s: %v", name, e)
		}
	})
	return err
}

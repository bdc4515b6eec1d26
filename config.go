package zcluster

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// configFlag names the flag that points at a YAML config file.
const configFlag = "config"

// errConfigFile reports a config file that cannot be used.
var errConfigFile = errors.New("config file")

// applyConfigFile sets every flag of fs that is still unset (not given on
// the command line nor by its environment variable) from the YAML file at
// path. The file is a mapping whose keys are flag names ("etcd",
// "session-ttl", ...); a list value becomes a comma list. A key that is not
// a flag of this command is an error, so a typo does not go unnoticed.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfigFile, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%w %s: %v", errConfigFile, path, oneLine(err.Error()))
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the first bad key deterministically
	for _, key := range keys {
		f := fs.Lookup(key)
		if f == nil || key == configFlag || key == "help" {
			return fmt.Errorf("%w %s: unknown key %q (the keys are the flag names: see --help)", errConfigFile, path, key)
		}
		if f.Changed {
			continue // the command line or the environment wins
		}
		v, err := configValue(doc[key])
		if err != nil {
			return fmt.Errorf("%w %s: key %q: %v", errConfigFile, path, key, err)
		}
		if v == nil {
			continue
		}
		if err := fs.Set(key, *v); err != nil {
			return fmt.Errorf("%w %s: key %q: %v", errConfigFile, path, key, err)
		}
	}
	return nil
}

// configValue turns a YAML value into the string a flag parses. Null gives
// nil (the key is ignored).
func configValue(v any) (*string, error) {
	var s string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		s = x
	case bool:
		s = strconv.FormatBool(x)
	case int:
		s = strconv.Itoa(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	case uint64:
		s = strconv.FormatUint(x, 10)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case time.Time:
		s = x.Format(time.RFC3339Nano)
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			p, err := configValue(e)
			if err != nil {
				return nil, err
			}
			if p != nil {
				parts = append(parts, *p)
			}
		}
		s = strings.Join(parts, ",")
	default:
		return nil, fmt.Errorf("want a scalar or a list, got %T", v)
	}
	return &s, nil
}

// configHelp documents the config file keys of a command: one per flag of
// fs, plus the global flags.
func configHelp(fs *pflag.FlagSet, global ...string) string {
	var b strings.Builder
	b.WriteString(`
Configuration comes from, in order of precedence: flags on the command line,
ZC_* environment variables, the YAML file named by --config (ZC_CONFIG),
then the defaults. The file's keys are the flag names; a list value is
joined into a comma list. Keys:
`)
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != configFlag && f.Name != "help" {
			names = append(names, f.Name)
		}
	})
	names = append(names, global...)
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	globalDefaults := map[string]string{"log-level": "info", "log-format": "text"}
	for _, n := range names {
		def := globalDefaults[n]
		if f := fs.Lookup(n); f != nil {
			def = f.DefValue
		}
		if def != "" {
			def = " (default " + def + ")"
		}
		fmt.Fprintf(&b, "  %-*s  %s%s\n", width+1, n+":", envName(n), def)
	}
	b.WriteString(`Example zcluster.yaml:
  etcd: [10.0.0.1:2379, 10.0.0.2:2379]
  redis: 10.0.0.5:6379
  ttl: 10s
  http: :9100
  log-format: json
`)
	return b.String()
}

package zcluster

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildVersion is the release version, set at build time with
// -ldflags "-X github.com/zcluster/zcluster.buildVersion=v1.2.3".
var buildVersion = "dev"

// version returns the version nodes publish in etcd: buildVersion, or the
// module version when built with `go install ...@version`.
func version() string {
	if buildVersion != "dev" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return buildVersion
}

// versionLine describes the binary called name: version, VCS revision
// when known, Go version and platform.
func versionLine(name string) string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" && modified {
			rev += "-dirty"
		}
	}
	if rev != "" {
		rev = " " + rev
	}
	return fmt.Sprintf("%s %s%s %s %s/%s", name, version(), rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newVersionCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(c.stdout, versionLine(c.name))
			return err
		},
	}
}

package zcluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

const (
	// defaultHealthTimeout bounds one `zcluster health` request.
	defaultHealthTimeout = 3 * time.Second
)

func newHealthCmd(c *cli) *cobra.Command {
	var (
		url     string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check a node's /readyz or /healthz (for container healthchecks: no curl needed)",
		Long: `health sends GET to --url and exits 0 when the answer is 200, else prints
the answer (or the error) on one line and exits 1. Nodes serve /healthz
(the process is alive) and /readyz (registered in etcd and Redis answers)
when started with --http.`,
		Example: `  zcluster health --url http://127.0.0.1:9100/readyz`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.health(cmd.Context(), url, timeout)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&url, "url", "http://127.0.0.1:9100/readyz", "URL to check")
	fs.DurationVar(&timeout, "timeout", defaultHealthTimeout, "how long to wait for the answer")
	annotateEnv(fs)
	return cmd
}

// health performs one check; see newHealthCmd.
func (c *cli) health(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("--url %q: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := oneLine(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, text)
	}
	_, err = fmt.Fprintln(c.stdout, strings.TrimSpace(text))
	return err
}

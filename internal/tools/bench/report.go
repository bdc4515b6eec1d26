package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// Report is the outcome of one or more runs done back to back.
type Report struct {
	Results []Result `json:"results"`
	// Ratios maps "a/b" to a's msgs/s divided by b's: echo/direct,
	// echo/plain, direct/plain, send/echo, whichever pairs were run.
	Ratios map[string]float64 `json:"ratios,omitempty"`
}

// ratioPairs are the ratios printed when both sides were run, in order.
var ratioPairs = [][2]string{
	{"echo", "direct"}, {"echo", "plain"}, {"direct", "plain"}, {"ws-echo", "echo"}, {"kcp-echo", "echo"}, {"send", "echo"}, {"broadcast", "echo"}, {"reliable", "send"},
}

// RunAll runs each scenario of cfg.Scenario's list in turn with the same
// options and computes the ratios between them.
func RunAll(ctx context.Context, cfg Config, scenarios []string) (Report, error) {
	var rep Report
	for _, s := range scenarios {
		c := cfg
		c.Scenario = s
		r, err := Run(ctx, c)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", s, err)
		}
		rep.Results = append(rep.Results, r)
	}
	rep.Ratios = ratios(rep.Results)
	return rep, nil
}

func ratios(rs []Result) map[string]float64 {
	by := map[string]float64{}
	for _, r := range rs {
		by[r.Scenario] = r.MsgsPerSec
	}
	out := map[string]float64{}
	for _, p := range ratioPairs {
		a, okA := by[p[0]]
		b, okB := by[p[1]]
		if okA && okB && b > 0 {
			out[p[0]+"/"+p[1]] = a / b
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Lost returns the total lost over every run.
func (r Report) Lost() int64 {
	var n int64
	for _, x := range r.Results {
		n += x.Lost
	}
	return n
}

// WriteText prints a table, then one "ratio a/b: X" line per ratio.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconns\twindow\tpayload\tmsgs/s\tp50\tp99\tp999\tcpu s/100k\tserver cpu s/100k\tallocs/msg\tsyscalls/msg\tredis cmds/msg\tsent\tanswered\terrors\tlost\t")
	for _, x := range r.Results {
		redis := "n/a"
		if x.RedisCmdsPerMsg >= 0 {
			redis = fmt.Sprintf("%.4f", x.RedisCmdsPerMsg)
		}
		cpu, scpu, allocs, sys := "n/a", "n/a", "n/a", "n/a"
		if x.LoadgenCPUShare >= 0 && x.ClusterCPUSecPer100k > 0 {
			scpu = fmt.Sprintf("%.3f", x.ClusterCPUSecPer100k)
		}
		if x.AllocsPerMsg >= 0 {
			allocs = fmt.Sprintf("%.1f", x.AllocsPerMsg)
		}
		if x.SyscallsPerMsg >= 0 {
			sys = fmt.Sprintf("%.2f", x.SyscallsPerMsg)
		}
		if x.CPUSecPer100k > 0 {
			cpu = fmt.Sprintf("%.3f", x.CPUSecPer100k)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t\n",
			x.Scenario, x.Conns, x.Window, x.Payload, x.MsgsPerSec,
			fmtUs(x.P50us), fmtUs(x.P99us), fmtUs(x.P999us), cpu, scpu, allocs, sys, redis,
			x.Sent, x.Answered, x.Errors, x.Lost)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, x := range r.Results {
		fmt.Fprintf(w, "%s: %s\n", x.Scenario, x.Target)
		if x.RedisCallsPerMsg >= 0 {
			fmt.Fprintf(w, "%s: %.3f Redis round trips and %.3f append scripts per delivery for inbox appends (pipelined; a user's appends queued together share a script)\n", x.Scenario, x.RedisCallsPerMsg, x.InboxScriptsPerMsg)
		}
		if x.RelayPerSent >= 0 {
			fmt.Fprintf(w, "%s: %.2f relay envelopes from backends per request sent\n", x.Scenario, x.RelayPerSent)
		}
	}
	for _, p := range ratioPairs {
		k := p[0] + "/" + p[1]
		if v, ok := r.Ratios[k]; ok {
			fmt.Fprintf(w, "ratio %s: %.2f\n", k, v)
		}
	}
	return nil
}

// WriteJSON prints the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fmtUs(us float64) string {
	switch {
	case us >= 1000:
		return fmt.Sprintf("%.2fms", us/1000)
	default:
		return fmt.Sprintf("%.0fus", us)
	}
}

package topview

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zcluster/zcluster/registry"
)

// ClearScreen moves the cursor home and clears the terminal (ANSI), for
// --watch.
const ClearScreen = "\x1b[H\x1b[2J"

// WriteTable writes the nodes as an aligned table, one row per node, then a
// summary line.
func (s *Snapshot) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tNODE\tKIND\tRELAY\tCLIENT\tROUTES\tSESSIONS\tCONNS\tLEASE\tVERSION\tUPTIME")
	gates, backends := 0, 0
	for _, n := range s.Nodes {
		if n.Kind == registry.KindGate {
			gates++
		} else {
			backends++
		}
		sessions := "-"
		if n.Sessions != nil {
			sessions = strconv.Itoa(*n.Sessions)
		}
		lease := "-"
		if n.LeaseTTL >= 0 {
			lease = (time.Duration(n.LeaseTTL) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			n.Group, n.ID, n.Kind, dash(n.RelayAddr), dash(n.ClientAddr), dash(FormatRoutes(n.Routes)),
			sessions, dash(FormatConns(n.Conns)), lease, dash(n.Version), (time.Duration(n.Uptime) * time.Second).String())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	summary := fmt.Sprintf("%d nodes (%d gates, %d backends)", len(s.Nodes), gates, backends)
	if s.Sessions >= 0 {
		summary += fmt.Sprintf(", %d sessions", s.Sessions)
		if s.Orphans > 0 {
			summary += fmt.Sprintf(" (%d owned by gates no longer registered)", s.Orphans)
		}
	}
	_, err := fmt.Fprintf(w, "%s at %s\n", summary, s.Time.Format(time.TimeOnly))
	return err
}

// FormatConns lists connections by transport as "tcp 3, ws 2, kcp 0"
// (tcp, ws, kcp first, then any other, by name).
func FormatConns(conns map[string]int) string {
	if len(conns) == 0 {
		return ""
	}
	names := make([]string, 0, len(conns))
	for tr := range conns {
		names = append(names, tr)
	}
	order := map[string]int{"tcp": 0, "ws": 1, "kcp": 2}
	slices.SortFunc(names, func(a, b string) int {
		oa, ok := order[a]
		if !ok {
			oa = len(order)
		}
		ob, ok := order[b]
		if !ok {
			ob = len(order)
		}
		return cmp.Or(cmp.Compare(oa, ob), cmp.Compare(a, b))
	})
	parts := make([]string, len(names))
	for i, tr := range names {
		parts[i] = tr + " " + strconv.Itoa(conns[tr])
	}
	return strings.Join(parts, ", ")
}

// FormatRoutes lists routes as "2 send, 3 chain-echo".
func FormatRoutes(rs []registry.Route) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strconv.FormatUint(uint64(r.MsgID), 10) + " " + r.Name
	}
	return strings.Join(parts, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteRoutes writes the routing table: one row per msgID and group, with
// the nodes that serve it. A msgID claimed by two groups is marked as a
// conflict.
func (s *Snapshot) WriteRoutes(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MSGID\tNAME\tGROUP\tNODES")
	for _, r := range s.Routes {
		for _, g := range r.Groups {
			nodes := strings.Join(g.Nodes, ", ")
			if r.Down {
				nodes = "(down: no live node)"
			}
			if len(r.Groups) > 1 {
				nodes += "  (CONFLICT: msgID claimed by several groups)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.MsgID, dash(g.Name), g.Group, nodes)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Routes) == 0 {
		_, err := fmt.Fprintln(w, "no routes registered")
		return err
	}
	return nil
}

// WriteJSON writes v (a Snapshot, or its Routes) as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

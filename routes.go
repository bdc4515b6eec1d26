package zcluster

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/internal/tools/topview"
)

func newRoutesCmd(c *cli) *cobra.Command {
	f := &viewFlags{}
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "Show the routing table: msgID -> group -> nodes (reads etcd)",
		Long: `routes reads the routes every node published in etcd and prints, per msgID,
its name, the group that serves it and the live nodes of that group. A
msgID claimed by two groups is marked as a conflict. A msgID whose group
has no live node any more (for an hour after its last node left) is listed
as down: gates answer it with "no live node for group". -o json prints the
same data for scripts.`,
		Example: `  zcluster routes --etcd 127.0.0.1:2379`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			return c.view(cmd.Context(), f, false, func(w io.Writer, s *topview.Snapshot) error {
				if f.output == "json" {
					return topview.WriteJSON(w, s.Routes)
				}
				return s.WriteRoutes(w)
			})
		},
	}
	bindViewFlags(cmd.Flags(), f, false)
	return cmd
}

// Command zcluster is the one binary of a zcluster running its chat
// application: it runs a gate or a backend node against a real etcd and
// Redis, starts a whole demo cluster in one process, and connects to a gate
// as an interactive chat client. It is built on the public entry point
// (package github.com/zcluster/zcluster), as a server of one's own is.
//
//	zcluster gate    --id gate-1 --listen :18001 --relay :19001 --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379 --secret S
//	zcluster backend --id im-1 --group im --app chat --relay :19101 --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379 --secret S
//	zcluster demo [--once]
//	zcluster chat --gate 127.0.0.1:18001 --user alice
//	zcluster top [--watch] [-o json]
//	zcluster routes
//	zcluster health --url http://127.0.0.1:9100/readyz
//	zcluster bench
//	zcluster version
//
// Every flag also reads the environment variable ZC_<FLAG> (upper case,
// dashes as underscores: --etcd-prefix is ZC_ETCD_PREFIX); gate and backend
// also read the YAML file named by --config, keyed by flag name. A flag
// given on the command line wins over the environment, which wins over the
// file, which wins over the default.
// Every failure is reported as one line on stderr with a non-zero exit
// status.
package main

import "github.com/zcluster/zcluster"

func main() {
	zcluster.Main(chatApp(), options()...)
}

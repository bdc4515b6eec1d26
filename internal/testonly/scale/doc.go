// Package scale holds zcluster's scale-out tests: the cluster on a 3-member
// etcd cluster that loses its leader, on a Redis Cluster, with 5 gates,
// 8 backends and thousands of client connections, and the share of sessions
// that move when a backend joins a loaded group.
//
// They are slow and need redis-server and redis-cli, so they run only when
// the environment sets ZC_SCALE=1 (CI does, in .ci/run) and never under
// -short:
//
//	ZC_SCALE=1 go test -v -timeout 10m ./internal/testonly/scale/
//
// The figures they log are written down in docs/scale.md.
package scale

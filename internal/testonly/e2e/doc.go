// Package e2e holds zcluster's end-to-end tests: real gates and backends on
// loopback, an embedded etcd, a real redis-server, real client connections.
package e2e

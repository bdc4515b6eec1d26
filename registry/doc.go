// Package registry is zcluster's etcd layer: a node publishes itself and the
// msgIDs it serves under a lease (Register), and every node keeps a live,
// lock-free view of the cluster (Watch) from which it routes messages (Route,
// Pick).
//
// # Keys
//
// With the default prefix "/zcluster":
//
//	/zcluster/nodes/<group>/<nodeID>   JSON of Node
//	/zcluster/routes/<msgID>/<nodeID>  {"group":"im","name":"send","anonymous":true}
//
// Both keys of a node hang on that node's lease: a clean stop (Close) revokes
// it so the node vanishes at once, a crash lets it expire after the TTL.
// Everything is readable with `etcdctl get --prefix /zcluster/`.
//
// # Registration
//
// Register checks, in one consistent read, that no other live lease holds
// the node key (ErrNodeExists) and that no other group serves one of its
// msgIDs (ErrRouteConflict), then grants a lease and writes every key in one
// transaction guarded by the revision of that read. One goroutine per
// Registration then keeps the lease alive and watches the node key; every
// TTL/2 it also checks that all keys are present. On any loss (lease
// expired or revoked, etcd restarted, a key deleted by hand) it first
// checks whether the old lease is still alive with every key on it (etcd
// came back with its data) and keeps it if so; otherwise it registers again
// under a new lease, retrying with backoff (100ms..1s, jittered) until
// Close. A re-registration refused by a conflict is logged at error level
// (rate-limited) and retried, never abandoned.
//
// # Topology
//
// Watch reads the prefix once, then one goroutine follows it from the next
// revision. Each batch of changes is turned into a new immutable snapshot
// swapped in with an atomic pointer, so Node, Route and Pick take no lock and
// do not allocate. On any watch failure (compaction, cancellation, lost
// leader) the goroutine re-reads the prefix, publishes the differences as
// events and resumes; while etcd is unreachable the last view stays in use.
//
// # Concurrency
//
// Every goroutine is owned: a Registration's by Close, a Topology's by
// Close; both wait for it to exit. Every etcd call of those goroutines, and
// the revoke in Close, carries a timeout of at most 5s, so a dead etcd never
// blocks Close for long. The package holds no
// global state. Locks (Topology.subMu, Topology.pauseMu) are leaves: nothing
// else is acquired while holding one, and subscribers are called without
// them.
package registry

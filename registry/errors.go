package registry

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (test
// with errors.Is) or an error from the etcd client.
var (
	// ErrInvalidConfig reports a Config that cannot be used (no client, ...).
	ErrInvalidConfig = errors.New("registry: invalid config")
	// ErrInvalidNode reports a Node that cannot be published (empty or
	// slash-containing ID or group, unknown kind, undialable address, bad
	// routes).
	ErrInvalidNode = errors.New("registry: invalid node")
	// ErrRouteConflict reports a msgID already served by another group.
	ErrRouteConflict = errors.New("registry: route conflict")
	// ErrNodeExists reports a node key held by another live lease: a second
	// process with the same node ID.
	ErrNodeExists = errors.New("registry: node already registered")
	// ErrConcurrentChange reports that the keys a registration depends on kept
	// changing between its read and its write.
	ErrConcurrentChange = errors.New("registry: concurrent change")
)

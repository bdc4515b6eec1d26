package registry

import (
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// DialOptions are the gRPC options zcluster recommends for the etcd client
// a Registration and a Topology use (clientv3.Config.DialOptions). gRPC's
// default reconnect backoff grows to minutes, so after an etcd outage of a
// few seconds a client may stay disconnected for seconds more: longer than
// a short lease TTL, and the node's lease expires although etcd is back.
// These reconnect at least every second.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: time.Second,
		}),
	}
}

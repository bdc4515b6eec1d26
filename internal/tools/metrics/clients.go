package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// RedisHook returns a go-redis hook that times every command and pipeline
// into zcluster_redis_call_seconds. Add it with client.AddHook.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m} }

type redisHook struct{ m *Metrics }

var _ redis.Hook = redisHook{}

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.m.redisDur.WithLabelValues(cmd.Name(), redisResult(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.m.redisDur.WithLabelValues("pipeline", redisResult(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

// redisResult labels a call: ok, nil (key not found: an answer, not a
// failure) or error.
func redisResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, redis.Nil):
		return "nil"
	}
	return "error"
}

// EtcdDialOptions returns gRPC dial options that time every etcd call into
// zcluster_etcd_call_seconds. Append them to clientv3.Config.DialOptions.
func (m *Metrics) EtcdDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, opts...)
			m.etcdDur.WithLabelValues(method, grpcResult(err)).Observe(time.Since(start).Seconds())
			return err
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			start := time.Now()
			s, err := streamer(ctx, desc, cc, method, opts...)
			m.etcdDur.WithLabelValues(method, grpcResult(err)).Observe(time.Since(start).Seconds())
			return s, err
		}),
	}
}

// grpcResult labels a gRPC call by its status code ("OK", "Unavailable", ...).
func grpcResult(err error) string { return status.Code(err).String() }

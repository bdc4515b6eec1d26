package metrics

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds one /readyz check.
const readyTimeout = 2 * time.Second

// HandlerOptions configures Handler.
type HandlerOptions struct {
	// Ready reports why the node cannot serve (not started, not registered
	// in etcd, Redis not answering), or nil when it can. Nil means always
	// ready.
	Ready func(ctx context.Context) error
	// Pprof adds the net/http/pprof handlers under /debug/pprof/.
	Pprof bool
	// Extra serves more handlers, by ServeMux pattern (e.g. the chat page
	// under "/chat/").
	Extra map[string]http.Handler
}

// Handler serves the node's HTTP endpoints:
//
//	/metrics        Prometheus text format, from the node's own registry
//	/healthz        200 "ok" while the process runs
//	/readyz         200 "ok" when o.Ready returns nil, else 503 and the reason
//	/debug/pprof/   only with o.Pprof
//	o.Extra         as given
func (m *Metrics) Handler(o HandlerOptions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if o.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			err := o.Ready(ctx)
			cancel()
			if err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	for pattern, h := range o.Extra {
		mux.Handle(pattern, h)
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

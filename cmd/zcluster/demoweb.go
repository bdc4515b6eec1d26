package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/web"
)

// demoPagePrefix is where the demo serves the chat page.
const demoPagePrefix = "/chat/"

// demoWeb serves the chat page (web/chat.html) and web/zcluster.js for the
// demo's gates. Its one goroutine ends in close.
type demoWeb struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// startDemoWeb serves the page on addr; the page offers every gate's
// WebSocket endpoint.
func startDemoWeb(addr string, gates []*gate.Gate, log *slog.Logger) (*demoWeb, error) {
	var eps []web.Endpoint
	for _, g := range gates {
		if e, ok := web.EndpointOf(g.ID(), g.WSURL()); ok {
			eps = append(eps, e)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("chat page listener: %w", err)
	}
	w := &demoWeb{
		srv: &http.Server{
			Handler:           web.Handler(demoPagePrefix, func() []web.Endpoint { return eps }),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(w.done)
		if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("chat page server stopped", "addr", ln.Addr().String(), "cause", err)
		}
	}()
	return w, nil
}

// url returns the page's address.
func (w *demoWeb) url() string { return "http://" + w.ln.Addr().String() + demoPagePrefix }

func (w *demoWeb) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		_ = w.srv.Close()
	}
	<-w.done
}

// pageURL returns the chat page's URL, or "" before it is served.
func (d *demoCluster) pageURL() string {
	if d.web == nil {
		return ""
	}
	return d.web.url()
}

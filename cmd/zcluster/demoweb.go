package main

import (
	"log/slog"

	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/runtime/httpserve"
	"github.com/zcluster/zcluster/web"
)

// demoPagePrefix is where the demo serves the chat page.
const demoPagePrefix = "/chat/"

// demoWeb serves the chat page (web/chat.html) and web/zcluster.js for the
// demo's gates.
type demoWeb struct{ srv *httpserve.Server }

// startDemoWeb serves the page on addr; the page offers every gate's
// WebSocket endpoint.
func startDemoWeb(addr string, gates []*gate.Gate, log *slog.Logger) (*demoWeb, error) {
	var eps []web.Endpoint
	for _, g := range gates {
		if e, ok := web.EndpointOf(g.ID(), g.WSURL()); ok {
			eps = append(eps, e)
		}
	}
	srv, err := httpserve.Start(addr, "chat page", web.Handler(demoPagePrefix, func() []web.Endpoint { return eps }), log)
	if err != nil {
		return nil, err
	}
	return &demoWeb{srv: srv}, nil
}

// url returns the page's address.
func (w *demoWeb) url() string { return "http://" + w.srv.Addr() + demoPagePrefix }

func (w *demoWeb) close() { w.srv.Close() }

// pageURL returns the chat page's URL, or "" before it is served.
func (d *demoCluster) pageURL() string {
	if d.web == nil {
		return ""
	}
	return d.web.url()
}

// Package web serves the browser side of zcluster from the binary: the
// client library zcluster.js (an ES module, no build step) and the chat
// page chat.html, plus endpoints.json, which tells the page which gates'
// WebSocket endpoints it may connect to.
//
// Mount Handler under a path ending in "/" (the gate's --http server and
// `zcluster demo` use /chat/):
//
//	GET /chat/                 the chat page
//	GET /chat/zcluster.js      the client library
//	GET /chat/endpoints.json   {"gates":[{"id":"gate-1","url":"ws://host:port/ws"}, ...]}
package web

import (
	"embed"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
)

//go:embed zcluster.js chat.html
var files embed.FS

// Endpoint is one gate's WebSocket endpoint as the page sees it.
type Endpoint struct {
	// ID is the gate's node id.
	ID string
	// Scheme is "ws" or "wss"; Port and Path locate the endpoint on the
	// host the browser reached the page on.
	Scheme, Port, Path string
}

// EndpointsFunc lists the gates a page may connect to, at request time.
type EndpointsFunc func() []Endpoint

// Handler serves the page, the library and the endpoint list under prefix
// (e.g. "/chat/"). Each endpoint URL uses the host name the browser reached
// the page on, so it passes the gate's default origin check (same host name).
func Handler(prefix string, endpoints EndpointsFunc) http.Handler {
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	mux := http.NewServeMux()
	serve := func(name, ctype string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			b, err := files.ReadFile(name)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(b)
		}
	}
	mux.HandleFunc("GET "+prefix+"{$}", serve("chat.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET "+prefix+"chat.html", serve("chat.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET "+prefix+"zcluster.js", serve("zcluster.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET "+prefix+"endpoints.json", func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		type gate struct {
			ID  string `json:"id"`
			URL string `json:"url"`
		}
		out := struct {
			Gates []gate `json:"gates"`
		}{Gates: []gate{}}
		for _, e := range endpoints() {
			u := url.URL{Scheme: e.Scheme, Host: net.JoinHostPort(host, e.Port), Path: e.Path}
			out.Gates = append(out.Gates, gate{ID: e.ID, URL: u.String()})
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// EndpointOf turns a gate's WebSocket URL into an Endpoint.
func EndpointOf(id, wsURL string) (Endpoint, bool) {
	u, err := url.Parse(wsURL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return Endpoint{}, false
	}
	return Endpoint{ID: id, Scheme: u.Scheme, Port: u.Port(), Path: u.Path}, true
}

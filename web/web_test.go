package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, host, path string) (int, string, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Host = host
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, rec.Header().Get("Content-Type"), string(b)
}

func TestHandlerServesPageLibraryAndEndpoints(t *testing.T) {
	e, ok := EndpointOf("gate-1", "wss://10.0.0.5:18443/ws")
	if !ok {
		t.Fatal("EndpointOf refused a wss URL")
	}
	h := Handler("/chat", func() []Endpoint { return []Endpoint{e} })

	for _, path := range []string{"/chat/", "/chat/chat.html"} {
		code, ctype, body := get(t, h, "example.net:9100", path)
		if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, `from "./zcluster.js"`) {
			t.Fatalf("%s: %d %s %.80q", path, code, ctype, body)
		}
	}
	code, ctype, body := get(t, h, "example.net:9100", "/chat/zcluster.js")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/javascript") || !strings.Contains(body, "export class Client") {
		t.Fatalf("zcluster.js: %d %s", code, ctype)
	}

	// The endpoint uses the host name the page was reached on, so that it
	// passes the gate's default origin check.
	code, _, body = get(t, h, "[::1]:9100", "/chat/endpoints.json")
	var got struct {
		Gates []struct{ ID, URL string }
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != http.StatusOK {
		t.Fatalf("endpoints.json: %d %q %v", code, body, err)
	}
	if len(got.Gates) != 1 || got.Gates[0].ID != "gate-1" || got.Gates[0].URL != "wss://[::1]:18443/ws" {
		t.Fatalf("endpoints.json: %+v", got)
	}
	if code, _, _ := get(t, h, "x", "/chat/other"); code != http.StatusNotFound {
		t.Fatalf("/chat/other: %d", code)
	}
	if _, ok := EndpointOf("g", "http://x/ws"); ok {
		t.Fatal("EndpointOf accepted an http URL")
	}
}

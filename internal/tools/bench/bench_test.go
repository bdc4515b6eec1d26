package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// short is a bounded run: a few connections for well under a second.
func short(s string) Config {
	return Config{
		Scenario: s, Conns: 4, Window: 4, Payload: 64,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Drain: 5 * time.Second,
	}
}

func checkCounted(t *testing.T, r Result) {
	t.Helper()
	if r.Sent == 0 || r.Answered == 0 || r.MsgsPerSec <= 0 {
		t.Fatalf("%s: nothing measured: %+v", r.Scenario, r)
	}
	if r.Lost != 0 || r.Errors != 0 || r.Answered != r.Expected {
		t.Fatalf("%s: sent %d expected %d answered %d errors %d lost %d, want every request answered",
			r.Scenario, r.Sent, r.Expected, r.Answered, r.Errors, r.Lost)
	}
	if r.P50us <= 0 || r.P99us < r.P50us || r.P999us < r.P99us {
		t.Fatalf("%s: latency quantiles out of order: %v %v %v", r.Scenario, r.P50us, r.P99us, r.P999us)
	}
}

func TestPlainAnswersEveryRequest(t *testing.T) {
	r, err := Run(context.Background(), short("plain"))
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if r.CPUSecPer100k <= 0 {
		t.Fatalf("cpu not measured: %+v", r)
	}
	if r.LoadgenCPUShare > 1 || (r.LoadgenCPUShare >= 0 && r.ClusterCPUSecPer100k > r.CPUSecPer100k) {
		t.Fatalf("load generator share %v: server cpu %v of %v", r.LoadgenCPUShare, r.ClusterCPUSecPer100k, r.CPUSecPer100k)
	}
}

// A server that swallows every 7th request of each connection: every one
// of them must show up as lost, no more and no less.
func TestDroppedRequestsAreCountedAsLost(t *testing.T) {
	cfg := short("plain")
	cfg.dropEvery = 7
	cfg.Drain = 500 * time.Millisecond // the swallowed ones never come
	var srv *plainServer
	cfg.gotPlain = func(s *plainServer) { srv = s }
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	dropped := srv.dropped.Load()
	if dropped == 0 {
		t.Fatal("the server dropped nothing")
	}
	if r.Lost != dropped {
		t.Fatalf("lost = %d, the server swallowed %d (sent %d answered %d)", r.Lost, dropped, r.Sent, r.Answered)
	}
	if r.Answered+uint64(r.Lost) != r.Sent {
		t.Fatalf("sent %d != answered %d + lost %d", r.Sent, r.Answered, r.Lost)
	}
}

func TestSmokeDirect(t *testing.T) {
	r, err := Run(context.Background(), short("direct"))
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
}

func TestSmokeEcho(t *testing.T) {
	r, err := Run(context.Background(), short("echo"))
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if !strings.Contains(r.Target, "cluster") {
		t.Fatalf("target %q", r.Target)
	}
}

func TestSmokeKCPEcho(t *testing.T) {
	r, err := Run(context.Background(), short("kcp-echo"))
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if !strings.Contains(r.Target, "cluster") {
		t.Fatalf("target %q", r.Target)
	}
}

func TestSmokeWSEcho(t *testing.T) {
	cfg := short("ws-echo")
	cfg.Payload = 20000 // a window of requests is one message: larger than a 64 KiB write buffer
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if !strings.Contains(r.Target, "cluster") {
		t.Fatalf("target %q", r.Target)
	}
}

func TestSmokeSend(t *testing.T) {
	r, err := Run(context.Background(), short("send"))
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if r.RedisCmdsPerMsg < 0 && strings.Contains(r.Target, "redis-server") {
		t.Fatalf("redis commands not measured against %s", r.Target)
	}
}

func TestSmokeReliable(t *testing.T) {
	r, err := Run(context.Background(), short("reliable"))
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	// At most one round trip per append (two for a batch that met a
	// Redis without the script loaded yet: EVALSHA, then EVAL).
	if r.RedisCallsPerMsg <= 0 || r.RedisCallsPerMsg > 2 {
		t.Fatalf("inbox round trips per delivery %v: want measured, at most one per append", r.RedisCallsPerMsg)
	}
	// At most one append script per message (fewer when a user's appends
	// queued together share one).
	if r.InboxScriptsPerMsg <= 0 || r.InboxScriptsPerMsg > 1 {
		t.Fatalf("append scripts per delivery %v: want measured, at most one per message", r.InboxScriptsPerMsg)
	}
}

func TestSmokeBroadcast(t *testing.T) {
	cfg := short("broadcast")
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if r.Expected != r.Sent*uint64(cfg.Conns) {
		t.Fatalf("broadcast to %d sessions: expected %d for %d sent", cfg.Conns, r.Expected, r.Sent)
	}
}

// The room scenario: every push reaches every member, and crosses the
// relay once per gate with members (2) plus the forward's done.
func TestSmokeRoom(t *testing.T) {
	cfg := short("room")
	cfg.Conns = 6
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkCounted(t, r)
	if r.Expected != r.Sent*uint64(cfg.Conns) {
		t.Fatalf("room of %d members: expected %d for %d sent", cfg.Conns, r.Expected, r.Sent)
	}
	if r.RelayPerSent < 2.9 || r.RelayPerSent > 3.1 {
		t.Fatalf("relay envelopes per push = %.2f, want 3 (2 gates + done)", r.RelayPerSent)
	}
}

func TestCompareReportsRatios(t *testing.T) {
	rep, err := RunAll(context.Background(), short(""), []string{"plain", "direct"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.Ratios["direct/plain"]; !ok || len(rep.Results) != 2 {
		t.Fatalf("report %+v", rep)
	}
	var text, js bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "ratio direct/plain: ") {
		t.Fatalf("text output:\n%s", text.String())
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != 2 {
		t.Fatalf("json output %v:\n%s", err, js.String())
	}
}

func TestUnknownScenario(t *testing.T) {
	if _, err := Run(context.Background(), Config{Scenario: "nope"}); err == nil {
		t.Fatal("want an error")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.04 {
			t.Errorf("q%v = %v, want %v (within 4%%)", c.q, got, c.want)
		}
	}
}

func TestLoadgenShareOfAProfile(t *testing.T) {
	var split cpuSplit
	split.start()
	if !split.on {
		t.Skip("a CPU profile is already running")
	}
	done := make(chan struct{})
	go asLoadgen(func() { // labelled: burns CPU for the profile to see
		defer close(done)
		x := 0
		for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
			x++
		}
		_ = x
	})
	<-done
	share := split.stop()
	if share < 0.5 || share > 1 {
		t.Fatalf("load generator share %v, want most of the CPU (only it was busy)", share)
	}
}

func TestUnreachableGateFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	cfg := short("send")
	cfg.Gates = []string{addr}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Run(ctx, cfg); err == nil || ctx.Err() != nil {
		t.Fatalf("err = %v (ctx %v), want a prompt dial error", err, ctx.Err())
	}
}

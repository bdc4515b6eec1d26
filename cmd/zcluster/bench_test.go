package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestBenchComparePrintsRatios(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "bench", "--compare", "plain,direct,echo",
		"--conns", "4", "--window", "4", "--duration", "300ms", "--warmup", "100ms")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"ratio echo/direct: ", "ratio echo/plain: ", "lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchJSON(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "bench", "--scenario", "plain", "--json",
		"--conns", "2", "--duration", "200ms", "--warmup", "50ms")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	var rep struct {
		Results []struct {
			Scenario   string  `json:"scenario"`
			MsgsPerSec float64 `json:"msgs_per_sec"`
			Lost       int64   `json:"lost"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(rep.Results) != 1 || rep.Results[0].Scenario != "plain" || rep.Results[0].MsgsPerSec <= 0 || rep.Results[0].Lost != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestBenchRejectsUnknownScenario(t *testing.T) {
	code, _, errOut := runCLI(t, nil, "bench", "--scenario", "nope")
	if code == 0 || !strings.Contains(errOut, "unknown scenario") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

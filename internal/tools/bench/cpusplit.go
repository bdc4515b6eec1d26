package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"

	"google.golang.org/protobuf/encoding/protowire"
)

// The load generator's goroutines run under this pprof label, so a CPU
// profile of the measured interval tells its share of the process's CPU
// from the servers' or cluster nodes'.
const (
	labelKey = "zcluster_bench"
	labelGen = "loadgen"
)

// asLoadgen runs fn with the load generator's label.
func asLoadgen(fn func()) {
	pprof.Do(context.Background(), pprof.Labels(labelKey, labelGen), func(context.Context) { fn() })
}

// cpuSplit profiles the process between start and stop.
type cpuSplit struct {
	buf bytes.Buffer
	on  bool
}

// start begins profiling; it fails if a profile is already running (for
// instance --cpuprofile), and then the split is simply not measured.
func (c *cpuSplit) start() {
	c.on = pprof.StartCPUProfile(&c.buf) == nil
}

// stop ends profiling and returns the load generator's share of the
// sampled CPU time, or -1.
func (c *cpuSplit) stop() float64 {
	if !c.on {
		return -1
	}
	pprof.StopCPUProfile()
	c.on = false
	share, err := loadgenShare(c.buf.Bytes())
	if err != nil {
		return -1
	}
	return share
}

var errProfile = errors.New("bench: unreadable cpu profile")

// loadgenShare reads a gzipped pprof profile (profile.proto) and returns
// the fraction of its CPU time in samples labelled as the load generator.
func loadgenShare(gz []byte) (float64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errProfile, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errProfile, err)
	}
	type label struct{ key, str int64 }
	type sample struct {
		values []int64
		labels []label
	}
	var (
		strs    []string
		samples []sample
		types   [][2]int64 // sample_type: type, unit string indexes
	)
	err = fields(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case num == 1 && typ == protowire.BytesType: // sample_type
			var vt [2]int64
			err := fields(v, func(n protowire.Number, t protowire.Type, x []byte) error {
				if t == protowire.VarintType && (n == 1 || n == 2) {
					u, _ := protowire.ConsumeVarint(x)
					vt[n-1] = int64(u)
				}
				return nil
			})
			types = append(types, vt)
			return err
		case num == 2 && typ == protowire.BytesType: // sample
			var s sample
			err := fields(v, func(n protowire.Number, t protowire.Type, x []byte) error {
				switch {
				case n == 2 && t == protowire.BytesType: // packed values
					for len(x) > 0 {
						u, m := protowire.ConsumeVarint(x)
						if m < 0 {
							return errProfile
						}
						s.values = append(s.values, int64(u))
						x = x[m:]
					}
				case n == 2 && t == protowire.VarintType:
					u, _ := protowire.ConsumeVarint(x)
					s.values = append(s.values, int64(u))
				case n == 3 && t == protowire.BytesType: // label
					var l label
					err := fields(x, func(n protowire.Number, t protowire.Type, y []byte) error {
						if t == protowire.VarintType && (n == 1 || n == 2) {
							u, _ := protowire.ConsumeVarint(y)
							if n == 1 {
								l.key = int64(u)
							} else {
								l.str = int64(u)
							}
						}
						return nil
					})
					if err != nil {
						return err
					}
					s.labels = append(s.labels, l)
				}
				return nil
			})
			samples = append(samples, s)
			return err
		case num == 6 && typ == protowire.BytesType: // string_table
			strs = append(strs, string(v))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	idx := 0 // the value to sum: cpu nanoseconds if present, else the count
	for i, t := range types {
		if t[0] >= 0 && int(t[0]) < len(strs) && strs[t[0]] == "cpu" {
			idx = i
		}
	}
	var total, gen int64
	for _, s := range samples {
		if idx >= len(s.values) {
			continue
		}
		total += s.values[idx]
		for _, l := range s.labels {
			if int(l.key) < len(strs) && int(l.str) < len(strs) && strs[l.key] == labelKey && strs[l.str] == labelGen {
				gen += s.values[idx]
				break
			}
		}
	}
	if total == 0 {
		return 0, errProfile
	}
	return float64(gen) / float64(total), nil
}

// fields calls fn for each top-level field of the protobuf message b. For
// varint fields v holds the encoded varint; for bytes fields the contents.
func fields(b []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errProfile
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.VarintType:
			_, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return errProfile
			}
			v, b = b[:m], b[m:]
		case protowire.BytesType:
			x, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return errProfile
			}
			v, b = x, b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return errProfile
			}
			b = b[m:]
			continue
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

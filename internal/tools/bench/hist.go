package bench

import (
	"math/bits"
	"time"
)

// subBits is the precision of the histogram: 2^subBits buckets per power of
// two, so a reported quantile is within about 3% of the true value.
const subBits = 5

// hist is a log-linear latency histogram in nanoseconds. It is not safe for
// concurrent use: each connection's reader owns one and they are merged.
type hist struct {
	counts [64 << subBits]uint64
	n      uint64
}

func bucketOf(ns int64) int {
	if ns < 1 {
		ns = 1
	}
	v := uint64(ns)
	if v < 1<<subBits {
		return int(v)
	}
	exp := bits.Len64(v) - 1 - subBits
	return (exp+1)<<subBits | int(v>>uint(exp))&(1<<subBits-1)
}

// valueOf returns the upper bound of bucket i.
func valueOf(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	exp := i>>subBits - 1
	mant := uint64(i&(1<<subBits-1)) | 1<<subBits
	return int64((mant+1)<<uint(exp)) - 1
}

func (h *hist) record(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the latency below which fraction q of the samples fall.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	target := uint64(q*float64(h.n) + 0.5)
	if target < 1 {
		target = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= target {
			return time.Duration(valueOf(i))
		}
	}
	return time.Duration(valueOf(len(h.counts) - 1))
}

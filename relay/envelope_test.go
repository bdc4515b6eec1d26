package relay

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func sampleEnvelope(k Kind) Envelope {
	return Envelope{
		Kind:    k,
		Flags:   FlagDone | FlagError,
		MsgID:   0xA1B2C3D4,
		Seq:     0x0102030405060708,
		Session: []byte("sess-0001"),
		User:    []byte("alice"),
		Source:  []byte("gate-1"),
		Payload: []byte(`{"to":"bob","text":"hi"}`),
	}
}

func equalEnvelopes(a, b *Envelope) bool {
	return a.Kind == b.Kind && a.Flags == b.Flags && a.MsgID == b.MsgID && a.Seq == b.Seq &&
		bytes.Equal(a.Session, b.Session) && bytes.Equal(a.User, b.User) &&
		bytes.Equal(a.Source, b.Source) && bytes.Equal(a.Payload, b.Payload)
}

func TestEnvelopeRoundTripEveryKind(t *testing.T) {
	for k := KindForward; k <= kindMax; k++ {
		t.Run(k.String(), func(t *testing.T) {
			in := sampleEnvelope(k)
			b, err := in.Append([]byte("prefix"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) || len(b) != len("prefix")+in.Size() {
				t.Fatalf("Append did not append %d bytes: %q", in.Size(), b)
			}
			var out Envelope
			if err := out.Decode(b[len("prefix"):]); err != nil {
				t.Fatal(err)
			}
			if !equalEnvelopes(&in, &out) {
				t.Fatalf("round trip: got %+v, want %+v", out, in)
			}
			// Fields alias the input but cannot grow into their neighbour.
			if cap(out.Session) != len(out.Session) || cap(out.User) != len(out.User) {
				t.Fatalf("field capacity not capped")
			}
		})
	}
}

func TestEnvelopeEmptyFields(t *testing.T) {
	in := Envelope{Kind: KindBroadcast}
	b, err := in.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != fixedLen {
		t.Fatalf("minimal envelope is %d bytes, want %d", len(b), fixedLen)
	}
	out := sampleEnvelope(KindPush) // stale values must be cleared
	if err := out.Decode(b); err != nil {
		t.Fatal(err)
	}
	if out.Session != nil || out.User != nil || out.Source != nil || out.Payload != nil || out.Flags != 0 {
		t.Fatalf("empty fields not nil: %+v", out)
	}
}

func TestEnvelopeFieldLimits(t *testing.T) {
	max := bytes.Repeat([]byte("x"), MaxFieldLen)
	in := Envelope{Kind: KindForward, Session: max, User: max, Source: max, Payload: []byte("p")}
	b, err := in.Append(nil)
	if err != nil {
		t.Fatalf("255-byte fields: %v", err)
	}
	var out Envelope
	if err := out.Decode(b); err != nil || !equalEnvelopes(&in, &out) {
		t.Fatalf("255-byte fields round trip: %v", err)
	}
	long := append(max, 'y')
	for name, e := range map[string]Envelope{
		"session": {Kind: KindForward, Session: long},
		"user":    {Kind: KindForward, User: long},
		"source":  {Kind: KindForward, Source: long},
	} {
		got, err := e.Append([]byte("keep"))
		if !errors.Is(err, ErrFieldTooLong) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s of 256 bytes: err %v", name, err)
		}
		if string(got) != "keep" {
			t.Errorf("%s: dst changed on error: %q", name, got)
		}
	}
	for _, k := range []Kind{0, kindMax + 1, 255} {
		e := Envelope{Kind: k}
		if _, err := e.Append(nil); !errors.Is(err, ErrUnknownKind) {
			t.Errorf("kind %d: err %v, want ErrUnknownKind", k, err)
		}
	}
}

func TestEnvelopeDecodeEveryTruncation(t *testing.T) {
	in := sampleEnvelope(KindForward)
	in.Payload = nil // the payload is "the rest": any cut inside it is valid
	b, err := in.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(b); n++ {
		var out Envelope
		err := out.Decode(b[:n])
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d of %d bytes: err %v, want ErrMalformed", n, len(b), err)
		}
		if !equalEnvelopes(&out, &Envelope{}) {
			t.Fatalf("truncated to %d: envelope not reset: %+v", n, out)
		}
	}
}

func TestEnvelopeDecodeRejects(t *testing.T) {
	good, _ := (&Envelope{Kind: KindCall, Session: []byte("s")}).Append(nil)
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	cases := map[string][]byte{
		"nil":            nil,
		"version 0":      mut(func(b []byte) { b[0] = 0 }),
		"version 2":      mut(func(b []byte) { b[0] = 2 }),
		"kind 0":         mut(func(b []byte) { b[1] = 0 }),
		"kind past max":  mut(func(b []byte) { b[1] = byte(kindMax + 1) }),
		"session length": mut(func(b []byte) { b[15] = 255 }),
		"user length":    mut(func(b []byte) { b[17] = 200 }),
		"source length":  mut(func(b []byte) { b[18] = 1 }),
	}
	for name, b := range cases {
		var e Envelope
		if err := e.Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestEnvelopeNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	e := sampleEnvelope(KindReply)
	buf := make([]byte, 0, 256)
	b, _ := e.Append(buf)
	var out Envelope
	if n := testing.AllocsPerRun(100, func() { buf, _ = e.Append(buf[:0]) }); n != 0 {
		t.Errorf("Append: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = out.Decode(b) }); n != 0 {
		t.Errorf("Decode: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = out.Decode(b[:3]) }); n != 0 {
		t.Errorf("Decode of bad input: %v allocs", n)
	}
}

func FuzzDecode(f *testing.F) {
	for k := KindForward; k <= kindMax; k++ {
		e := sampleEnvelope(k)
		b, _ := e.Append(nil)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{Version, byte(KindPush), 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Envelope
		if err := e.Decode(b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := e.Append(nil)
		if err != nil {
			t.Fatalf("re-encode of a decoded envelope: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("encoding not canonical:\n in %x\nout %x", b, out)
		}
		var e2 Envelope
		if err := e2.Decode(out); err != nil {
			t.Fatalf("decode of re-encoded: %v", err)
		}
		if !equalEnvelopes(&e, &e2) {
			t.Fatalf("fields differ after re-encode: %+v vs %+v", e, e2)
		}
	})
}

func BenchmarkEnvelopeAppend(b *testing.B) {
	e := sampleEnvelope(KindForward)
	e.Payload = bytes.Repeat([]byte("p"), 64)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(e.Size()))
	for b.Loop() {
		buf, _ = e.Append(buf[:0])
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	e := sampleEnvelope(KindForward)
	e.Payload = bytes.Repeat([]byte("p"), 64)
	raw, _ := e.Append(nil)
	var out Envelope
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if err := out.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

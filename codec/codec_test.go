package codec_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zcluster/zcluster/codec"
)

func TestCodecs(t *testing.T) {
	type msg struct {
		A int `json:"a"`
	}
	var j codec.JSON
	b, err := j.Marshal(msg{A: 3})
	if err != nil || string(b) != `{"a":3}` {
		t.Fatalf("json: %s, %v", b, err)
	}
	var m msg
	if err := j.Unmarshal(b, &m); err != nil || m.A != 3 {
		t.Fatalf("json round trip: %+v, %v", m, err)
	}

	var p codec.Protobuf
	b, err = p.Marshal(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	var s wrapperspb.StringValue
	if err := p.Unmarshal(b, &s); err != nil || s.GetValue() != "x" {
		t.Fatalf("protobuf round trip: %q, %v", s.GetValue(), err)
	}
	if _, err := p.Marshal(msg{}); !errors.Is(err, codec.ErrNotProto) {
		t.Fatalf("protobuf of a struct: %v", err)
	}
	if err := codec.Check(p, &s, &msg{}); !errors.Is(err, codec.ErrNotProto) {
		t.Fatalf("Check: %v", err)
	}
	if err := codec.Check(j, &msg{}); err != nil {
		t.Fatalf("Check json: %v", err)
	}
}

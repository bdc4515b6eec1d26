package backend_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/codec"
	"github.com/zcluster/zcluster/zctest"
)

type addReq struct {
	A, B int
}

type addResp struct {
	Sum  int    `json:"sum"`
	User string `json:"user"`
}

const (
	msgAdd     uint32 = 20
	msgProto   uint32 = 21
	msgSilent  uint32 = 22
	msgAddedAs uint32 = 23
	msgOther   uint32 = 24
	msgFail    uint32 = 25
)

var errTooBig = errors.New("too big")

func setupTyped(b *backend.Backend) error {
	add := func(c *backend.Context, r *addReq) (*addResp, error) {
		if r.A > 1000 {
			return nil, errTooBig
		}
		return &addResp{Sum: r.A + r.B, User: c.User()}, nil
	}
	b.Handle(msgAdd, "add", backend.Typed(add))
	b.Handle(msgOther, "add-other", backend.Typed(add, backend.ReplyMsgID(msgAddedAs)))
	b.Handle(msgFail, "add-fail", backend.Typed(add))
	b.Handle(msgProto, "upper", backend.Typed(func(c *backend.Context, s *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return wrapperspb.String(strings.ToUpper(s.GetValue())), nil
	}, backend.WithCodec(codec.Protobuf{})))
	b.Handle(msgSilent, "silent", backend.Typed(func(c *backend.Context, r *addReq) (*addResp, error) {
		// No reply; a push encoded with the handler's codec instead.
		p, err := c.Encode(addResp{Sum: r.A})
		if err != nil {
			return nil, err
		}
		return nil, c.Push(c.Session(), msgAddedAs, p)
	}))
	return nil
}

func TestTypedHandlers(t *testing.T) {
	c := zctest.Start(t, zctest.Config{Backend: setupTyped, Groups: []string{"calc"}, Gates: 1})
	cl := c.Client(t, 0).Login("ann")

	// JSON both ways, reply msgID = request msgID.
	cl.SendJSON(msgAdd, addReq{A: 2, B: 3})
	var r addResp
	cl.ExpectJSON(msgAdd, &r)
	if r.Sum != 5 || r.User != "ann" {
		t.Fatalf("add = %+v, want sum 5 for ann", r)
	}

	// ReplyMsgID overrides the reply's msgID.
	cl.SendJSON(msgOther, addReq{A: 1, B: 1})
	cl.ExpectJSON(msgAddedAs, &r)
	if r.Sum != 2 {
		t.Fatalf("add-other = %+v", r)
	}

	// A payload that does not decode is an error frame; the handler did
	// not run.
	cl.Send(msgAdd, []byte("{not json"))
	if e := cl.ExpectError(msgAdd); !strings.Contains(e, "bad request") || !strings.Contains(e, "json") {
		t.Fatalf("bad payload: error frame %q, want bad request naming json", e)
	}

	// The handler's error is an error frame.
	cl.SendJSON(msgFail, addReq{A: 5000})
	if e := cl.ExpectError(msgFail); !strings.Contains(e, "too big") {
		t.Fatalf("handler error: %q", e)
	}

	// Protobuf on one route.
	in, _ := proto.Marshal(wrapperspb.String("hello"))
	cl.Send(msgProto, in)
	var out wrapperspb.StringValue
	if err := proto.Unmarshal(cl.Expect(msgProto), &out); err != nil || out.GetValue() != "HELLO" {
		t.Fatalf("protobuf route: %q, %v", out.GetValue(), err)
	}
	cl.Send(msgProto, []byte{0xff, 0xff, 0xff})
	if e := cl.ExpectError(msgProto); !strings.Contains(e, "protobuf") {
		t.Fatalf("bad protobuf payload: %q", e)
	}

	// A nil reply sends nothing; Encode uses the handler's codec.
	cl.SendJSON(msgSilent, addReq{A: 7})
	cl.ExpectJSON(msgAddedAs, &r)
	if r.Sum != 7 {
		t.Fatalf("push = %+v", r)
	}
	cl.ExpectNone(msgSilent, 300*time.Millisecond)
}

// Config.Codec makes protobuf the codec of every typed handler of a node.
func TestTypedAppCodec(t *testing.T) {
	c := zctest.Start(t, zctest.Config{
		Gates:  1,
		Groups: []string{"p"},
		Backend: func(b *backend.Backend) error {
			b.Handle(msgProto, "len", backend.Typed(func(c *backend.Context, s *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
				return wrapperspb.Int64(int64(len(s.GetValue()))), nil
			}))
			return nil
		},
		BackendConfig: func(cfg *backend.Config) { cfg.Codec = codec.Protobuf{} },
	})
	cl := c.Client(t, 0).Login("bo")
	in, _ := proto.Marshal(wrapperspb.String("four"))
	cl.Send(msgProto, in)
	var n wrapperspb.Int64Value
	if err := proto.Unmarshal(cl.Expect(msgProto), &n); err != nil || n.GetValue() != 4 {
		t.Fatalf("len = %d, %v", n.GetValue(), err)
	}
}

func TestTypedProtobufNeedsProtoMessages(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), "not a proto.Message") {
			t.Fatalf("recover() = %v, want a panic naming the type", r)
		}
	}()
	backend.Typed(func(*backend.Context, *addReq) (*addResp, error) { return nil, nil }, backend.WithCodec(codec.Protobuf{}))
}

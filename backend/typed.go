package backend

import (
	"errors"
	"fmt"

	"github.com/zcluster/zcluster/codec"
)

// ErrBadRequest is the error of a typed handler whose payload does not
// decode: the client gets an error frame saying so, the handler does not
// run.
var ErrBadRequest = errors.New("backend: bad request")

// TypedOption adjusts a typed handler (see Typed).
type TypedOption func(*typedOptions)

type typedOptions struct {
	codec    codec.Codec
	replyID  uint32
	replySet bool
}

// WithCodec makes a typed handler decode and encode with c instead of the
// backend's codec (Config.Codec, JSON by default): for example
// codec.Protobuf{} for one route of a JSON application.
func WithCodec(c codec.Codec) TypedOption {
	return func(o *typedOptions) { o.codec = c }
}

// ReplyMsgID makes a typed handler answer with msgID instead of the
// request's msgID.
func ReplyMsgID(msgID uint32) TypedOption {
	return func(o *typedOptions) { o.replyID, o.replySet = msgID, true }
}

// Typed turns fn, a handler of typed messages, into a HandlerFunc for
// Backend.Handle or Backend.HandleCall:
//
//	b.Handle(MsgJoin, "join", backend.Typed(func(c *backend.Context, req *JoinRequest) (*JoinReply, error) {
//		...
//		return &JoinReply{OK: true}, nil
//	}))
//
// The payload is decoded into a new Req with the handler's codec (see
// WithCodec; else Config.Codec; else JSON). A payload that does not decode
// is answered with an error frame wrapping ErrBadRequest, and fn does not
// run. A non-nil *Resp is encoded and sent as the reply with the request's
// msgID (see ReplyMsgID); a nil one sends no reply. An error from fn
// reaches the client as an error frame, as from any handler. Inside fn,
// Context.Encode uses the same codec.
//
// Typed panics if WithCodec names codec.Protobuf and Req or Resp is not a
// proto.Message, so the mistake shows at startup.
func Typed[Req, Resp any](fn func(c *Context, req *Req) (*Resp, error), opts ...TypedOption) HandlerFunc {
	var o typedOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.codec != nil {
		if err := codec.Check(o.codec, new(Req), new(Resp)); err != nil {
			panic("backend.Typed: " + err.Error())
		}
	}
	return func(c *Context) error {
		cd := o.codec
		if cd == nil {
			cd = c.s.cfg.Codec
		}
		req := new(Req)
		if err := cd.Unmarshal(c.Payload(), req); err != nil {
			return fmt.Errorf("%w: msgID %d: %s payload: %v", ErrBadRequest, c.MsgID(), cd.Name(), err)
		}
		c.codec = cd
		resp, err := fn(c, req)
		if err != nil || resp == nil {
			return err
		}
		b, err := cd.Marshal(resp)
		if err != nil {
			return fmt.Errorf("msgID %d: encode reply: %w", c.MsgID(), err)
		}
		id := c.MsgID()
		if o.replySet {
			id = o.replyID
		}
		return c.Reply(id, b)
	}
}

// Encode encodes v with the handler's codec: a typed handler's (see
// Typed), else the backend's (Config.Codec, JSON by default). Use it for
// the payloads of Push, PushUser, PushRoom and Broadcast.
func (c *Context) Encode(v any) ([]byte, error) {
	cd := c.codec
	if cd == nil {
		cd = c.s.cfg.Codec
	}
	return cd.Marshal(v)
}

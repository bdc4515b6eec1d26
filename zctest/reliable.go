package zctest

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/protocol"
)

// Resume sends the resume request of cl.Cursor (after Login) and waits for
// the gate's answer, which it applies to the cursor and returns. The
// stored messages follow: read them with ExpectReliable.
func (cl *Client) Resume() inbox.ResumeAnswer {
	cl.t.Helper()
	cl.Send(inbox.MsgResume, cl.Cursor.Request().Append(nil))
	f, err := cl.nextReliable()
	if err == nil && f.MsgID != inbox.MsgResume {
		err = fmt.Errorf("reliable message %q before the resume answer", f.Payload)
	}
	if err != nil {
		cl.t.Fatalf("zctest: resume: %v", err)
	}
	a, err := inbox.ParseResumeAnswer(f.Payload)
	if err != nil {
		cl.t.Fatalf("zctest: resume: %v", err)
	}
	cl.Cursor.Answer(a)
	return a
}

// ExpectReliable waits for the next reliable message (backend.Deliver)
// and returns it after checking it against cl.Cursor: the next offset of
// the inbox, never a repeat. A gap answer on the way is applied to the
// cursor (cl.Cursor.Gaps counts them).
func (cl *Client) ExpectReliable() inbox.Message {
	cl.t.Helper()
	for {
		f, err := cl.nextReliable()
		if err != nil {
			cl.t.Fatalf("zctest: %v", err)
		}
		if f.MsgID == inbox.MsgResume {
			a, err := inbox.ParseResumeAnswer(f.Payload)
			if err != nil {
				cl.t.Fatalf("zctest: %v", err)
			}
			cl.Cursor.Answer(a)
			continue
		}
		m, err := inbox.ParseMessage(f.Payload)
		if err != nil {
			cl.t.Fatalf("zctest: %v", err)
		}
		isNew, err := cl.Cursor.Message(m)
		if err != nil {
			cl.t.Fatalf("zctest: %v", err)
		}
		if !isNew {
			cl.t.Fatalf("zctest: reliable message %d received twice", m.Offset)
		}
		return m
	}
}

// nextReliable returns the next frame of the reliable channel (a resume
// answer or a reliable message), in order, keeping other frames for later
// Expects; an error frame about MsgResume is an error.
func (cl *Client) nextReliable() (Frame, error) {
	for i, f := range cl.pending {
		if f.MsgID == inbox.MsgResume || f.MsgID == inbox.MsgMessage {
			cl.pending = append(cl.pending[:i], cl.pending[i+1:]...)
			return f, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ExpectTimeout)
	defer cancel()
	for {
		f, err := cl.conn.Recv(ctx)
		if err != nil {
			return Frame{}, fmt.Errorf("no reliable frame within %v (kept %d others): %w", ExpectTimeout, len(cl.pending), err)
		}
		switch f.MsgID {
		case inbox.MsgResume, inbox.MsgMessage:
			return Frame{MsgID: f.MsgID, Payload: f.Payload}, nil
		}
		fr := Frame{MsgID: f.MsgID, Payload: f.Payload}
		if e, ok := errorAbout(fr, inbox.MsgResume); ok {
			return Frame{}, fmt.Errorf("resume refused: %s", e)
		}
		cl.pending = append(cl.pending, fr)
	}
}

// errorAbout reports whether f is an error frame about msgID, with its text.
func errorAbout(f Frame, msgID uint32) (string, bool) {
	if f.MsgID != protocol.MsgError {
		return "", false
	}
	var e ErrorFrame
	if json.Unmarshal(f.Payload, &e) != nil || e.MsgID != msgID {
		return "", false
	}
	return e.Error, true
}

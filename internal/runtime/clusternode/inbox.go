package clusternode

import (
	"context"
	"errors"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/relay"
)

// PushReliable hands one encoded reliable message (an inbox.MsgMessage
// payload) to the gate user is logged in on. The envelope names the user:
// the gate delivers it to that user's resumed connection, whichever session
// the sender's cache believed in. ErrOffline if the user is not logged in
// anywhere (the message stays in the inbox for the next resume).
func (n *Node) PushReliable(ctx context.Context, user string, frame []byte) error {
	sid, gate, err := n.SessionOf(ctx, user)
	if err != nil {
		return err
	}
	err = n.sendToGate(ctx, gate, &relay.Envelope{Kind: relay.KindPush, MsgID: inbox.MsgMessage, Session: []byte(sid), User: []byte(user), Payload: frame})
	if errors.Is(err, ErrOffline) {
		n.Sessions.ForgetUser(user)
	}
	return err
}

package e2e

import (
	"github.com/zcluster/zcluster/internal/testkit/chatkit"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/testkit"
)

// TestReadmeDeployment starts the deployment of the README as separate
// `zcluster gate` and `zcluster backend` processes with its flags (ports
// made free), and an unmodified zinx client logs in and chats through the
// two gates.
func TestReadmeDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the zcluster binary")
	}
	c := newCluster(t)
	gate1, gate2 := testkit.FreeAddr(t), testkit.FreeAddr(t)
	startProc(t, c.nodeArgs("gate", "gate-1", "--listen", gate1, "--relay", testkit.FreeAddr(t))...)
	startProc(t, c.nodeArgs("gate", "gate-2", "--listen", gate2, "--relay", testkit.FreeAddr(t))...)
	startProc(t, c.nodeArgs("backend", "im-1", "--group", "im", "--app", "chat", "--relay", testkit.FreeAddr(t))...)
	startProc(t, c.nodeArgs("backend", "echo-1", "--group", "echo", "--app", "chat", "--relay", testkit.FreeAddr(t))...)
	// An in-process observer gate waits until the topology is complete.
	c.startGate("observer")
	c.waitGroupSize("gate", 3, 20*time.Second)
	c.waitGroupSize(chat.GroupIM, 1, 20*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 20*time.Second)

	zed := newZinxClient(t, gate1)
	amy := newZinxClient(t, gate2)
	zed.send(t, chat.MsgLogin, []byte("zed"))
	zed.want(t, chat.MsgLogin, `"gate":"gate-1"`)
	amy.send(t, chat.MsgLogin, []byte("amy"))
	amy.want(t, chat.MsgLogin, `"gate":"gate-2"`)
	zed.send(t, chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "amy", Text: "through two gates"}))
	amy.want(t, chat.MsgDelivered, "through two gates")
	zed.want(t, chat.MsgSend, `"ok":true`)
	// im-1 and echo-1 started together: im-1's view of echo may lag a
	// moment behind the observer's, so a first chain-echo may get an error
	// frame; one of a few tries must come back.
	for try := 0; ; try++ {
		amy.send(t, chat.MsgChainEcho, []byte("chain"))
		if amy.within(chat.MsgChainEcho, "chain", 3*time.Second) {
			break
		}
		if try == 4 {
			t.Fatal("no chain-echo answer in 5 tries")
		}
	}
}

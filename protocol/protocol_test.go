package protocol

import "testing"

func TestReserved(t *testing.T) {
	for _, id := range []uint32{MsgKick, MsgHeartbeat, MsgError, MsgReliable, MsgResume} {
		if !Reserved(id) {
			t.Errorf("Reserved(%d) = false, want true", id)
		}
	}
	for _, id := range []uint32{0, 1, 2, 3, 4, 5, 100, 101, 65531} {
		if Reserved(id) {
			t.Errorf("Reserved(%d) = true, want false", id)
		}
	}
}

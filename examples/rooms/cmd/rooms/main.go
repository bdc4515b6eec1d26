// Command rooms runs the rooms lobby: rooms gate, rooms backend --group
// lobby, rooms demo, rooms top, ... (every command and flag of zcluster).
package main

import (
	"github.com/zcluster/zcluster"
	"github.com/zcluster/zcluster/examples/rooms"
)

func main() { zcluster.Main(rooms.App()) }

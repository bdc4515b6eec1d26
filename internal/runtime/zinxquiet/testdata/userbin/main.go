// Command userbin stands for a user's own server binary built on zcluster's
// packages (and on zinx directly): it only has to link them, since zinx
// complains about conf/zinx.json at package init. It prints what it saw.
package main

import (
	"fmt"
	"os"

	"github.com/aceld/zinx/zconf"
	"github.com/aceld/zinx/znet"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/gate"
)

func main() {
	_ = znet.NewServer
	_ = backend.New
	_ = gate.New
	fmt.Printf("ZINX_CONFIG_FILE_PATH=%q MaxPacketSize=%d\n", os.Getenv("ZINX_CONFIG_FILE_PATH"), zconf.GlobalObject.MaxPacketSize)
}

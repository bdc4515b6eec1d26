package zcluster

import (
	"fmt"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
)

// app is a built-in application: the handlers a gate and a backend run.
type app struct {
	setupGate    func(*gate.Gate) error
	setupBackend func(*backend.Server) error
}

// lookupApp returns the built-in application called name.
func lookupApp(name string) (app, error) {
	switch name {
	case "chat":
		return app{
			setupGate:    func(g *gate.Gate) error { chat.SetupGate(g); return nil },
			setupBackend: chat.SetupBackend,
		}, nil
	}
	return app{}, fmt.Errorf("unknown --app %q: the built-in applications are: chat", name)
}

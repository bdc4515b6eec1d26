package zcluster

import (
	"fmt"
	"strings"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/gate"
)

// App is an application built on zcluster: the handlers its gates and its
// backends run. Main turns it into a binary with the gate, backend, top,
// routes, health, demo and version commands.
//
// Gate and Backend are called once per node, after the node is created and
// before it starts, so they register handlers (gate.Gate.Handle,
// backend.Backend.Handle, backend.Handle for typed ones) and hooks. Either
// may be nil: a gate with no Gate function routes every client msgID by
// the routes backends publish, and a backend with no Backend function
// serves nothing.
type App struct {
	// Name names the application: the value of --app that selects it
	// (the first application of a binary is the default), and the binary's
	// name in usage and error lines unless WithName says otherwise.
	Name string
	// Gate registers the application's gate-local handlers.
	Gate func(*gate.Gate) error
	// Backend registers the application's backend handlers. It may look at
	// b.Group() to serve different groups from one binary.
	Backend func(b *backend.Backend) error
	// Groups lists the backend groups the application serves, for the demo
	// command (one backend of each) and for usage text. Optional.
	Groups []string
}

// setupGate runs a.Gate when it is set.
func (a App) setupGate(g *gate.Gate) error {
	if a.Gate == nil {
		return nil
	}
	if err := a.Gate(g); err != nil {
		return fmt.Errorf("app %s: gate setup: %w", a.Name, err)
	}
	return nil
}

// setupBackend runs a.Backend when it is set.
func (a App) setupBackend(b *backend.Backend) error {
	if a.Backend == nil {
		return nil
	}
	if err := a.Backend(b); err != nil {
		return fmt.Errorf("app %s: backend setup: %w", a.Name, err)
	}
	return nil
}

// appSet is the applications a binary knows, the first being the default.
type appSet []App

// lookup returns the application called name. A nil set has none.
func (s *appSet) lookup(name string) (App, error) {
	if s == nil {
		return App{}, fmt.Errorf("unknown --app %q: this binary has no applications", name)
	}
	for _, a := range *s {
		if a.Name == name {
			return a, nil
		}
	}
	return App{}, fmt.Errorf("unknown --app %q: the applications of this binary are: %s", name, s.names())
}

// names lists the applications' names, comma separated.
func (s *appSet) names() string {
	if s == nil {
		return ""
	}
	n := make([]string, len(*s))
	for i, a := range *s {
		n[i] = a.Name
	}
	return strings.Join(n, ", ")
}

// defaultName is the name of the default application, or "".
func (s *appSet) defaultName() string {
	if s == nil || len(*s) == 0 {
		return ""
	}
	return (*s)[0].Name
}

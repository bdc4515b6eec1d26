package session

import "errors"

// ErrNotFound means Redis holds no record for the session or user: it was
// never bound, was unbound, or its TTL ran out.
var ErrNotFound = errors.New("session: not found")

// ErrInvalidConfig is returned (wrapped) by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("session: invalid config")

// ErrInvalidArgument is returned (wrapped) for an empty session id or user
// name, or an Owner that cannot be stored.
var ErrInvalidArgument = errors.New("session: invalid argument")

// ErrBadRecord is returned (wrapped) when a session record in Redis is not of
// the form "<gate>|<token>".
var ErrBadRecord = errors.New("session: malformed record")

// errLookupPanicked is what callers sharing a lookup see if it panicked.
var errLookupPanicked = errors.New("session: lookup panicked")

package session

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
)

// idEncoding is lower-case RFC 4648 base32 without padding.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a new session id: 16 bytes from crypto/rand as 26 lower-case
// base32 characters ([a-z2-7]). Ids are unique across gates and restarts
// without coordination, and never contain '|' or ':'.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return idEncoding.EncodeToString(b[:])
}

// NewToken returns a new per-connection token: 8 random bytes as 16 hex
// characters. A gate stores it in the session record so that a late cleanup
// by an older connection never deletes a newer record.
func NewToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

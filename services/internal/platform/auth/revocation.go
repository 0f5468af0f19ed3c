package auth

import (
	"sync"
	"time"
)

// RevocationList is the set of revocations a process refuses tokens by. It
// is refreshed as a whole from the directory (directory.PollRevocations);
// between refreshes it answers from memory, so checking it costs a map
// lookup per call.
type RevocationList struct {
	mu      sync.RWMutex
	clients map[string]time.Time // client ID -> revoked at
	tokens  map[string]bool      // community + "/" + jti
}

var _ Revocations = (*RevocationList)(nil)

// Replace swaps in a fresh set: clients maps client IDs to when they were
// revoked, tokens holds community + "/" + token ID.
func (l *RevocationList) Replace(clients map[string]time.Time, tokens map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients, l.tokens = clients, tokens
}

// Revoked reports whether c's token was revoked: by its ID, or because its
// client was revoked after the token was issued.
func (l *RevocationList) Revoked(c Caller) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if c.TokenID != "" && l.tokens[c.Community+"/"+c.TokenID] {
		return true
	}
	if at, ok := l.clients[c.ClientID]; ok && c.ClientID != "" && !c.IssuedAt.After(at) {
		return true
	}
	return false
}

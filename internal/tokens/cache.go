package tokens

import (
	"sync"
	"time"
)

// cache holds decrypted access tokens for a short TTL. The TTL bounds how
// long a replica keeps serving a token after another replica disconnected
// the account; Keap leaves an access token valid until it expires even after
// a refresh, so serving a superseded one is harmless.
type cache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cacheEntry
}

type cacheEntry struct {
	tok   Token
	until time.Time
}

func newCache(ttl time.Duration) *cache {
	return &cache{ttl: ttl, m: map[string]cacheEntry{}}
}

// get returns a token still fresh at freshUntil (now + skew).
func (c *cache) get(id string, now, freshUntil time.Time) (Token, bool) {
	if c.ttl <= 0 {
		return Token{}, false
	}
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok || now.After(e.until) || !e.tok.ExpiresAt.After(freshUntil) {
		return Token{}, false
	}
	return e.tok, true
}

func (c *cache) put(id string, tok Token, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[id]; ok && old.tok.Version > tok.Version {
		return
	}
	c.m[id] = cacheEntry{tok: tok, until: now.Add(c.ttl)}
}

func (c *cache) drop(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

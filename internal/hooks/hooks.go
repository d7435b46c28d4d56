// Package hooks manages Keap REST hook subscriptions: each account's
// receiver URL (PUBLIC_BASE_URL/webhooks/keap/{account}/{secret}, the secret
// stored as a hash plus a sealed copy), creating and removing subscriptions
// at Keap, and the periodic health check that re-verifies hooks Keap turned
// Inactive.
package hooks

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// Manager is safe for concurrent use.
type Manager struct {
	mu      sync.Mutex // see locked
	cacheMu sync.Mutex
	cache   map[string]cachedEndpoint

	Pool          *pgxpool.Pool
	Store         *store.Store
	Tokens        *tokens.Coordinator
	Keap          *keap.Client
	Keyring       *seal.Keyring
	PublicBaseURL string
	Logger        *slog.Logger
}

// CodeUnknownEventKey is the error code for a subscription to an event key
// Keap does not offer.
const CodeUnknownEventKey = "unknown_event_key"

// DefaultEvents are what `hooks subscribe` uses without --events.
var DefaultEvents = []string{"contact.add", "contact.edit", "contact.delete"}

// dummyHash is compared against when an account has no endpoint, so an
// unknown account and a wrong secret take the same time.
var dummyHash = sha256.Sum256([]byte("keapsync: no such endpoint"))

// VerifySecret reports whether secret is accountID's receiver secret.
// Answers come from a cache (EndpointCacheTTL) only when they are yes: Keap
// delivers in bursts, and a database round trip per delivery was a third of
// the receiver's CPU. A no is always checked against the database, so a
// secret created on another replica a moment ago is never refused.
func (m *Manager) VerifySecret(ctx context.Context, accountID, secret string) (bool, error) {
	got := sha256.Sum256([]byte(secret))
	match := func(e cachedEndpoint) bool {
		want := dummyHash[:]
		if e.found {
			want = e.hash
		}
		return subtle.ConstantTimeCompare(got[:], want) == 1 && e.found
	}
	return m.check(ctx, accountID, match)
}

// Subscribed reports whether accountID is subscribed to eventKey, cached
// like VerifySecret: a subscription made on another replica (or by the CLI)
// while this one cached the account is seen at once.
func (m *Manager) Subscribed(ctx context.Context, accountID, eventKey string) (bool, error) {
	return m.check(ctx, accountID, func(e cachedEndpoint) bool { return slices.Contains(e.events, eventKey) })
}

func (m *Manager) check(ctx context.Context, accountID string, ok func(cachedEndpoint) bool) (bool, error) {
	e, cached, err := m.endpoint(ctx, accountID, false)
	if err != nil || ok(e) || !cached {
		return err == nil && ok(e), err
	}
	e, _, err = m.endpoint(ctx, accountID, true)
	return err == nil && ok(e), err
}

// EndpointCacheTTL bounds how long a replica trusts its cached view of an
// account's receiver secret and subscriptions.
const EndpointCacheTTL = 10 * time.Second

// maxCached bounds the cache; past it the cache starts over, so a flood of
// made-up account ids cannot grow it without end.
const maxCached = 10000

type cachedEndpoint struct {
	found  bool
	hash   []byte
	events []string
	until  time.Time
}

// endpoint returns the account's receiver view, from the cache unless
// fresh, and whether it came from the cache.
func (m *Manager) endpoint(ctx context.Context, accountID string, fresh bool) (cachedEndpoint, bool, error) {
	now := time.Now()
	m.cacheMu.Lock()
	e, ok := m.cache[accountID]
	m.cacheMu.Unlock()
	if ok && !fresh && now.Before(e.until) {
		return e, true, nil
	}
	row, err := m.Store.GetHookEndpoint(ctx, m.Pool, accountID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		e = cachedEndpoint{}
	case err != nil:
		return cachedEndpoint{}, false, err
	default:
		e = cachedEndpoint{found: true, hash: row.SecretHash, events: row.EventKeys}
	}
	e.until = now.Add(EndpointCacheTTL)
	m.cacheMu.Lock()
	if m.cache == nil || len(m.cache) >= maxCached {
		m.cache = map[string]cachedEndpoint{}
	}
	m.cache[accountID] = e
	m.cacheMu.Unlock()
	return e, false, nil
}

// Forget drops the cached view of an account, after a change to its
// receiver or subscriptions.
func (m *Manager) Forget(accountID string) {
	m.cacheMu.Lock()
	delete(m.cache, accountID)
	m.cacheMu.Unlock()
}

// Endpoint returns accountID's receiver URL, creating its secret on first
// use; a disconnected account has none.
func (m *Manager) Endpoint(ctx context.Context, accountID string) (string, error) {
	if err := m.requireAccount(ctx, accountID, true); err != nil {
		return "", err
	}
	e, err := m.Store.GetHookEndpoint(ctx, m.Pool, accountID)
	if errors.Is(err, store.ErrNotFound) {
		// Two callers racing both insert; the first wins and both re-read it.
		if err := m.createEndpoint(ctx, accountID); err != nil {
			return "", err
		}
		e, err = m.Store.GetHookEndpoint(ctx, m.Pool, accountID)
	}
	if err != nil {
		return "", err
	}
	secret, err := m.Keyring.Open(e.KeyID, accountID, "hook_secret", e.SecretCT)
	if err != nil {
		return "", fmt.Errorf("open hook secret: %w", err)
	}
	return m.PublicBaseURL + "/webhooks/keap/" + url.PathEscape(accountID) + "/" + string(secret), nil
}

func (m *Manager) createEndpoint(ctx context.Context, accountID string) error {
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	secret := base64.RawURLEncoding.EncodeToString(raw)
	hash := sha256.Sum256([]byte(secret))
	keyID, ct, err := m.Keyring.Seal(accountID, "hook_secret", []byte(secret))
	if err != nil {
		return err
	}
	return m.Store.InsertHookEndpoint(ctx, m.Pool, store.HookEndpoint{AccountID: accountID, SecretHash: hash[:], KeyID: keyID, SecretCT: ct})
}

// Subscribe creates a Keap subscription for each event not yet subscribed.
// Keap verifies the receiver while each create call runs, so keapsync serve
// must be reachable at PUBLIC_BASE_URL. Event keys Keap does not list are
// refused (CodeUnknownEventKey) before anything is created.
func (m *Manager) Subscribe(ctx context.Context, accountID string, events []string) ([]store.HookSubscription, error) {
	var out []store.HookSubscription
	err := m.locked(ctx, accountID, func() error {
		var err error
		out, err = m.subscribe(ctx, accountID, events)
		return err
	})
	return out, err
}

// locked runs fn holding the account's hooks lock, so concurrent subscribe
// and unsubscribe calls (from any replica) cannot create twin hooks at Keap.
// Hook management is rare, so one mutex serialises it within a process; the
// advisory lock is only tried, and waiters poll without holding a pool
// connection: fn itself needs connections (and so does the handshake Keap
// sends to this very process while fn runs), which blocked waiters would
// otherwise starve.
func (m *Manager) locked(ctx context.Context, accountID string, fn func() error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.Forget(accountID)
	for {
		var got bool
		err := pgx.BeginFunc(ctx, m.Pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", store.LockKey("hooks", accountID)).Scan(&got); err != nil || !got {
				return err
			}
			return fn()
		})
		if err != nil || got {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// requireAccount returns tokens.ErrNotFound for an account keapsync does
// not know and, when connected is set, for one that was disconnected.
func (m *Manager) requireAccount(ctx context.Context, accountID string, connected bool) error {
	a, err := m.Store.GetAccount(ctx, m.Pool, accountID)
	if errors.Is(err, store.ErrNotFound) || err == nil && connected && a.Status == store.StatusDisconnected {
		return tokens.ErrNotFound
	}
	return err
}

func (m *Manager) subscribe(ctx context.Context, accountID string, events []string) ([]store.HookSubscription, error) {
	// Endpoint reads the account's status under the hooks lock, which
	// settles any race with a disconnect (the token alone could come from
	// another replica's cache).
	hookURL, err := m.Endpoint(ctx, accountID)
	if err != nil {
		return nil, err
	}
	tok, err := m.Tokens.Get(ctx, accountID)
	if err != nil {
		return nil, err
	}
	have, err := m.Store.ListHookSubscriptions(ctx, m.Pool, accountID)
	if err != nil {
		return nil, err
	}
	events = slices.DeleteFunc(slices.Clone(events), func(ev string) bool {
		return slices.ContainsFunc(have, func(s store.HookSubscription) bool { return s.EventKey == ev })
	})
	if len(events) == 0 {
		return have, nil
	}
	known, err := m.Keap.EventKeys(ctx, tok.AccessToken)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, ev := range events {
		if !slices.Contains(known, ev) {
			unknown = append(unknown, ev)
		}
	}
	if len(unknown) > 0 {
		return nil, &tokens.Error{Code: CodeUnknownEventKey, Message: "Keap has no event key " + strings.Join(unknown, ", ") + " (see GET /v1/hooks/event_keys)"}
	}
	for _, ev := range events {
		h, err := m.Keap.CreateHook(ctx, tok.AccessToken, ev, hookURL)
		if err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", ev, err)
		}
		if err := m.Store.UpsertHookSubscription(ctx, m.Pool, accountID, h.Key, h.EventKey, h.Status); err != nil {
			return nil, err
		}
		if h.Status != "Verified" {
			m.Logger.WarnContext(ctx, "keap hook not verified", "account_id", accountID, "event_key", ev, "status", h.Status)
		}
	}
	return m.Store.ListHookSubscriptions(ctx, m.Pool, accountID)
}

// List refreshes the stored subscriptions' statuses from Keap and returns them.
func (m *Manager) List(ctx context.Context, accountID string) ([]store.HookSubscription, error) {
	if err := m.requireAccount(ctx, accountID, false); err != nil {
		return nil, err
	}
	if _, err := m.sync(ctx, accountID, false); err != nil {
		return nil, err
	}
	return m.Store.ListHookSubscriptions(ctx, m.Pool, accountID)
}

// Unsubscribe deletes every subscription of the account, at Keap and here.
func (m *Manager) Unsubscribe(ctx context.Context, accountID string) (int, error) {
	if err := m.requireAccount(ctx, accountID, false); err != nil {
		return 0, err
	}
	var n int
	err := m.locked(ctx, accountID, func() error {
		var err error
		n, err = m.unsubscribe(ctx, accountID)
		return err
	})
	return n, err
}

// Disconnect deletes accountID's hooks at Keap while its token still
// exists, then runs disconnect, both under the account's hooks lock, so no
// subscribe can create hooks between the two. A failure at Keap is logged
// and does not keep the account connected.
func (m *Manager) Disconnect(ctx context.Context, accountID string, disconnect func() error) error {
	return m.locked(ctx, accountID, func() error {
		if _, err := m.unsubscribe(ctx, accountID); err != nil && tokens.ErrorCode(err) != tokens.CodeAccountNotFound {
			m.Logger.WarnContext(ctx, "could not delete keap hooks before disconnecting", "account_id", accountID, "error", err)
		}
		return disconnect()
	})
}

func (m *Manager) unsubscribe(ctx context.Context, accountID string) (int, error) {
	subs, tok, err := m.subscriptions(ctx, accountID)
	if err != nil || len(subs) == 0 {
		return 0, err
	}
	for _, s := range subs {
		if err := m.Keap.DeleteHook(ctx, tok.AccessToken, s.KeapKey); err != nil {
			return 0, fmt.Errorf("unsubscribe %s: %w", s.EventKey, err)
		}
		if err := m.Store.DeleteHookSubscription(ctx, m.Pool, accountID, s.KeapKey); err != nil {
			return 0, err
		}
	}
	return len(subs), nil
}

// CheckHealth lists every subscribed account's hooks at Keap, records their
// status, and asks Keap to re-verify any that are not Verified. It returns
// how many re-verifications it asked for; one account's failure does not
// stop the others.
func (m *Manager) CheckHealth(ctx context.Context) (int, error) {
	accounts, err := m.Store.HookAccounts(ctx, m.Pool)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range accounts {
		v, err := m.sync(ctx, id, true)
		n += v
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
	}
	return n, errors.Join(errs...)
}

// subscriptions returns the stored subscriptions and, when there are any,
// a token to talk to Keap about them.
func (m *Manager) subscriptions(ctx context.Context, accountID string) ([]store.HookSubscription, tokens.Token, error) {
	subs, err := m.Store.ListHookSubscriptions(ctx, m.Pool, accountID)
	if err != nil || len(subs) == 0 {
		return nil, tokens.Token{}, err
	}
	tok, err := m.Tokens.Get(ctx, accountID)
	return subs, tok, err
}

// sync reads the account's hooks from Keap and updates the stored rows;
// with verify, hooks that are not Verified get a /verify call, counted.
func (m *Manager) sync(ctx context.Context, accountID string, verify bool) (int, error) {
	subs, tok, err := m.subscriptions(ctx, accountID)
	if err != nil || len(subs) == 0 {
		return 0, err
	}
	remote, err := m.Keap.ListHooks(ctx, tok.AccessToken)
	if err != nil {
		return 0, err
	}
	verified := 0
	byKey := map[string]keap.Hook{}
	for _, h := range remote {
		byKey[h.Key] = h
	}
	for _, s := range subs {
		h, ok := byKey[s.KeapKey]
		status := h.Status
		if !ok {
			status = "Missing"
		}
		if !verify || status == "Verified" || !ok {
			if err := m.Store.UpsertHookSubscription(ctx, m.Pool, accountID, s.KeapKey, s.EventKey, status); err != nil {
				return verified, err
			}
			continue
		}
		result := "verified"
		v, err := m.Keap.VerifyHook(ctx, tok.AccessToken, s.KeapKey)
		switch {
		case err != nil:
			result = "verify failed: " + err.Error()
		case v.Status != "Verified":
			result = "keap still reports " + v.Status
			status = v.Status
		default:
			status = v.Status
		}
		m.Logger.InfoContext(ctx, "re-verified keap hook", "account_id", accountID, "event_key", s.EventKey,
			"was", h.Status, "now", status, "result", strings.TrimSpace(result))
		if err := m.Store.RecordHookVerify(ctx, m.Pool, accountID, s.KeapKey, status, result); err != nil {
			return verified, err
		}
		verified++
	}
	return verified, nil
}

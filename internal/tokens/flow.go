package tokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/store"
)

// StateTTL is how long an authorization state stays usable.
const StateTTL = 10 * time.Minute

// Authorization is what starting the OAuth flow yields.
type Authorization struct {
	URL       string    `json:"authorization_url"`
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Initiate creates a single-use state bound to accountID (only its SHA-256
// is stored) and returns Keap's authorization URL carrying it.
func (c *Coordinator) Initiate(ctx context.Context, accountID string) (Authorization, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Authorization{}, err
	}
	state := base64.RawURLEncoding.EncodeToString(raw)
	now := c.o.Now()
	a := Authorization{URL: c.o.Keap.AuthCodeURL(state), State: state, ExpiresAt: now.Add(StateTTL)}
	if err := c.o.Store.InsertState(ctx, c.o.Pool, hashState(state), accountID, now, a.ExpiresAt); err != nil {
		return Authorization{}, fmt.Errorf("store state: %w", err)
	}
	return a, nil
}

func hashState(state string) []byte {
	h := sha256.Sum256([]byte(state))
	return h[:]
}

// CallbackParams are the query parameters Keap redirects the browser with.
type CallbackParams struct {
	Code, State, Scope      string
	Error, ErrorDescription string
}

// Callback completes the flow: it consumes the state (once, even when the
// rest fails), then exchanges the code and stores the tokens. It returns the
// account id. Every failure is an *Error with its own code; none stores tokens.
func (c *Coordinator) Callback(ctx context.Context, p CallbackParams) (string, error) {
	if p.State == "" {
		return "", errf(CodeStateMissing, "the callback has no state parameter", nil)
	}
	if len(p.State) > 256 {
		return "", errf(CodeStateUnknown, "unknown authorization state", nil)
	}
	now := c.o.Now()
	hash := hashState(p.State)
	st, err := c.o.Store.ConsumeState(ctx, c.o.Pool, hash, now)
	if errors.Is(err, store.ErrNotFound) {
		seen, err := c.o.Store.StateExists(ctx, c.o.Pool, hash)
		if err != nil {
			return "", err
		}
		if seen {
			return "", errf(CodeStateReplayed, "this authorization state was already used", nil)
		}
		return "", errf(CodeStateUnknown, "unknown authorization state", nil)
	}
	if err != nil {
		return "", fmt.Errorf("consume state: %w", err)
	}
	if now.After(st.ExpiresAt) {
		return "", errf(CodeStateExpired, "the authorization state expired; start again", nil)
	}
	if p.Error != "" {
		code := CodeAuthorizationFail
		if p.Error == "access_denied" {
			code = CodeAuthorizationDeny
		}
		return "", errf(code, "keap answered "+clip(p.Error, 64)+": "+clip(p.ErrorDescription, 200), nil)
	}
	if p.Code == "" {
		return "", errf(CodeCodeMissing, "the callback has no code parameter", nil)
	}
	tok, err := c.o.Keap.Exchange(ctx, p.Code)
	if err != nil {
		c.log.WarnContext(ctx, "code exchange failed", "account_id", st.AccountID, "error", err)
		if ke, ok := keap.AsError(err); ok && ke.Kind == keap.Permanent {
			return "", errf(CodeCodeRejected, "keap refused the authorization code; start again", err)
		}
		return "", errf(CodeExchangeFailed, "keap did not answer the code exchange; start again", err)
	}
	if tok.Scope == "" {
		tok.Scope = p.Scope // Keap repeats the scope in the redirect
	}
	if err := c.Connect(ctx, st.AccountID, tok); err != nil {
		return "", err
	}
	return st.AccountID, nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Connect stores freshly issued tokens for accountID, marks it connected and
// schedules its first refresh, in one transaction under the account's lock.
// A tenant different from the one already stored is refused.
func (c *Coordinator) Connect(ctx context.Context, id string, tok keap.Token) error {
	tenant := tok.Tenant()
	now := c.o.Now()
	err := pgx.BeginFunc(ctx, c.o.Pool, func(tx pgx.Tx) error {
		if err := c.o.Store.AdvisoryXactLock(ctx, tx, LockKey(id)); err != nil {
			return err
		}
		prev, err := c.o.Store.GetAccount(ctx, tx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case prev.Tenant != nil && *prev.Tenant != "" && *prev.Tenant != tenant:
			return errf(CodeTenantMismatch, fmt.Sprintf("account %s is bound to keap app %s, not %s", id, *prev.Tenant, tenant), nil)
		}
		if err := c.o.Store.UpsertConnectedAccount(ctx, tx, id, tenant); err != nil {
			return err
		}
		sealed, err := c.seal(id, tok, now)
		if err != nil {
			return err
		}
		version, err := c.o.Store.UpsertTokens(ctx, tx, id, sealed)
		if err != nil {
			return fmt.Errorf("store tokens: %w", err)
		}
		if err := c.o.Scheduler.ScheduleRefresh(ctx, tx, id, version, c.nextDue(now, tok.ExpiresAt)); err != nil {
			return err
		}
		if err := c.o.Store.DropStaleRefreshJobs(ctx, tx, id, version); err != nil {
			return err
		}
		kind := "connected"
		if prev.Status == store.StatusReauthRequired {
			kind = "recovered"
		}
		return c.event(ctx, tx, id, kind, "", map[string]any{"tenant": tenant, "version": version})
	})
	if err != nil {
		return err
	}
	c.cache.drop(id)
	c.log.InfoContext(ctx, "account connected", "account_id", id, "tenant", tenant)
	return nil
}

// Disconnect destroys an account's ciphertexts and its hook receiver secret
// (the receiver URL answers 404 from then on) and marks it disconnected.
// Pending refresh jobs find no tokens and end. Unknown accounts get
// ErrNotFound. Callers that can should delete the hooks at Keap first.
func (c *Coordinator) Disconnect(ctx context.Context, id string) error {
	err := pgx.BeginFunc(ctx, c.o.Pool, func(tx pgx.Tx) error {
		if err := c.o.Store.AdvisoryXactLock(ctx, tx, LockKey(id)); err != nil {
			return err
		}
		acct, err := c.o.Store.GetAccount(ctx, tx, id)
		if err != nil {
			return c.readErr(err)
		}
		if err := c.o.Store.DeleteTokens(ctx, tx, id); err != nil {
			return err
		}
		if err := c.o.Store.DeleteHookEndpoint(ctx, tx, id); err != nil {
			return err
		}
		if err := c.o.Store.DropStaleRefreshJobs(ctx, tx, id, math.MaxInt64); err != nil {
			return err
		}
		if acct.Status == store.StatusDisconnected {
			return nil // a repeated disconnect: no second event or notification
		}
		return c.setStatus(ctx, tx, id, store.StatusDisconnected, "disconnected through the API", nil)
	})
	c.cache.drop(id)
	if err == nil {
		c.log.InfoContext(ctx, "account disconnected", "account_id", id)
	}
	return err
}

// PurgeStates deletes authorization states that expired over a day ago.
func (c *Coordinator) PurgeStates(ctx context.Context) (int64, error) {
	return c.o.Store.PurgeStates(ctx, c.o.Pool, c.o.Now().Add(-24*time.Hour))
}

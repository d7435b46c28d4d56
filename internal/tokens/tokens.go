// Package tokens is the coordinator of keapsync's token vault: it hands out
// valid Keap access tokens and performs every refresh as one locked
// read-refresh-write in Postgres, so that no two refreshes of one account
// ever overlap, on any number of replicas, and a rotated refresh token is
// never lost. README.md, "How refresh works", walks through the algorithm.
package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
)

// Scheduler puts work in River inside tx; internal/jobs implements it.
type Scheduler interface {
	// ScheduleRefresh inserts the refresh_token job for (accountID,
	// version) due at `at`, unless that job already exists.
	ScheduleRefresh(ctx context.Context, tx pgx.Tx, accountID string, version int64, at time.Time) error
	// DeliverEvent queues audit event eventID (an account state change)
	// for the configured notification receivers; none configured, nothing.
	DeliverEvent(ctx context.Context, tx pgx.Tx, eventID int64) error
}

// Options configure a Coordinator. Zero values get the defaults noted.
type Options struct {
	Pool      *pgxpool.Pool
	Store     *store.Store
	Keap      *keap.Client
	Keyring   *seal.Keyring
	Scheduler Scheduler
	Logger    *slog.Logger     // default slog.Default()
	Now       func() time.Time // default time.Now
	Metrics   *Metrics         // default: unregistered metrics

	RefreshEvery time.Duration // next proactive refresh after a refresh, default 21h
	Skew         time.Duration // refresh when the access token expires within Skew, default 5m
	CacheTTL     time.Duration // in-process cache of decrypted tokens; 0 = off
	// MaxConcurrentRefreshes bounds refreshes in flight in this process, each
	// holding a pool connection; default half the pool, at least 1.
	MaxConcurrentRefreshes int
	// RefreshTimeout bounds one whole locked refresh, default 30s.
	RefreshTimeout time.Duration
}

// Coordinator is safe for concurrent use.
type Coordinator struct {
	o     Options
	log   *slog.Logger
	cache *cache
	sf    singleflight.Group
	sem   chan struct{}
}

// Token is a valid access token for one account.
type Token struct {
	AccessToken seal.Secret
	ExpiresAt   time.Time
	Version     int64
}

// New returns a Coordinator.
func New(o Options) *Coordinator {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = 21 * time.Hour
	}
	if o.Skew <= 0 {
		o.Skew = 5 * time.Minute
	}
	if o.RefreshTimeout <= 0 {
		o.RefreshTimeout = 30 * time.Second
	}
	if o.MaxConcurrentRefreshes <= 0 {
		o.MaxConcurrentRefreshes = max(1, int(o.Pool.Config().MaxConns)/2)
	}
	return &Coordinator{
		o:     o,
		log:   o.Logger,
		cache: newCache(o.CacheTTL),
		sem:   make(chan struct{}, o.MaxConcurrentRefreshes),
	}
}

// LockKey is the advisory lock key of an account: FNV-1a over a fixed
// namespace and the id, computed in Go so it never changes with Postgres'
// hashtext.
func LockKey(accountID string) int64 { return store.LockKey("refresh", accountID) }

// Get returns a valid access token, refreshing first when it expires within
// Skew. Errors are *Error with CodeAccountNotFound, CodeReauthRequired or
// CodeKeapUnavailable, or database errors.
func (c *Coordinator) Get(ctx context.Context, id string) (Token, error) {
	now := c.o.Now()
	if tok, ok := c.cache.get(id, now, now.Add(c.o.Skew)); ok {
		c.o.Metrics.cache.WithLabelValues("hit").Inc()
		return tok, nil
	}
	c.o.Metrics.cache.WithLabelValues("miss").Inc()
	row, err := c.o.Store.GetToken(ctx, c.o.Pool, id)
	if err != nil {
		return Token{}, c.readErr(err)
	}
	if row.Status != store.StatusConnected {
		return Token{}, ErrReauthRequired
	}
	if row.AccessExpiresAt.After(now.Add(c.o.Skew)) {
		return c.openAndCache(row)
	}
	if row.RetryAfter != nil && now.Before(*row.RetryAfter) {
		// A refresh failed moments ago; do not call Keap again before the
		// backoff ends. An access token inside the skew still works.
		if row.AccessExpiresAt.After(now) {
			return c.openAndCache(row)
		}
		return Token{}, unavailable(row.RetryAfter.Sub(now), nil)
	}
	return c.shared(ctx, id, row.Version, false)
}

// Refresh forces one refresh now, unless another refresh of the account
// committed since this call read the row, in which case it returns that one.
func (c *Coordinator) Refresh(ctx context.Context, id string) (Token, error) {
	row, err := c.o.Store.GetToken(ctx, c.o.Pool, id)
	if err != nil {
		return Token{}, c.readErr(err)
	}
	if row.Status != store.StatusConnected {
		return Token{}, ErrReauthRequired
	}
	return c.shared(ctx, id, row.Version, true)
}

// RefreshDue is the refresh_token job's work: refresh if the account is still
// at version. A stale version, a disconnected or re-authorization-bound
// account is done (nil): whoever moved the version scheduled the next job.
func (c *Coordinator) RefreshDue(ctx context.Context, id string, version int64) error {
	_, err := c.shared(ctx, id, version, true)
	switch {
	case err == nil, errors.Is(err, errStale):
		return nil
	case ErrorCode(err) == CodeAccountNotFound || ErrorCode(err) == CodeReauthRequired:
		return nil
	}
	return err
}

var errStale = errors.New("version moved")

func (c *Coordinator) readErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	return fmt.Errorf("read tokens: %w", err)
}

// shared runs one locked refresh per account per process at a time; callers
// who arrive while it runs share its result. The work is detached from the
// first caller's context so one impatient caller cannot fail the others.
func (c *Coordinator) shared(ctx context.Context, id string, seen int64, force bool) (Token, error) {
	key := fmt.Sprintf("%s\x00%d\x00%t", id, seen, force)
	ch := c.sf.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.RefreshTimeout)
		defer cancel()
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return Token{}, unavailable(time.Second, ctx.Err())
		}
		defer func() { <-c.sem }()
		return c.refreshLocked(ctx, id, seen, force)
	})
	select {
	case r := <-ch:
		tok, _ := r.Val.(Token)
		return tok, r.Err
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// refreshLocked is steps 2 to 5 of "Refresh, precisely".
func (c *Coordinator) refreshLocked(ctx context.Context, id string, seen int64, force bool) (Token, error) {
	var (
		out      Token
		outErr   error
		received *keap.Token
	)
	err := pgx.BeginFunc(ctx, c.o.Pool, func(tx pgx.Tx) error {
		if err := c.o.Store.AdvisoryXactLock(ctx, tx, LockKey(id)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		row, err := c.o.Store.GetToken(ctx, tx, id)
		if err != nil {
			outErr = c.readErr(err)
			return nil
		}
		now := c.o.Now()
		switch {
		case row.Status != store.StatusConnected:
			outErr = ErrReauthRequired
			return nil
		case row.Version != seen:
			// Someone else refreshed while we waited for the lock: use theirs.
			c.o.Metrics.refreshes.WithLabelValues("shared").Inc()
			if force && row.Version < seen {
				outErr = errStale
				return nil
			}
			out, outErr = c.openAndCache(row)
			return nil
		case !force && row.AccessExpiresAt.After(now.Add(c.o.Skew)):
			out, outErr = c.openAndCache(row)
			return nil
		}
		rt, err := c.o.Keyring.Open(row.KeyID, id, "refresh_token", row.RefreshTokenCT)
		if err != nil {
			return fmt.Errorf("open refresh token: %w", err)
		}
		tok, kerr := c.o.Keap.Refresh(ctx, seal.Secret(rt))
		if kerr != nil {
			outErr = c.recordFailure(ctx, tx, row, kerr)
			if errors.Is(outErr, ErrReauthRequired) || force || !row.AccessExpiresAt.After(now) {
				return nil
			}
			// Keap failed but the old access token has not expired yet.
			out, outErr = c.openAndCache(row)
			return nil
		}
		received = &tok
		out, err = c.writeRotation(ctx, tx, row, tok)
		return err
	})
	if err != nil && received != nil {
		// Keap has rotated; the tokens we hold are the only live copy.
		return c.persistReceived(ctx, id, seen, *received, err)
	}
	if err != nil {
		return Token{}, err
	}
	return out, outErr
}

// writeRotation stores refreshed tokens, schedules the next refresh and
// writes the audit event, all in tx.
func (c *Coordinator) writeRotation(ctx context.Context, tx pgx.Tx, row store.TokenRow, tok keap.Token) (Token, error) {
	now := c.o.Now()
	sealed, err := c.seal(row.AccountID, tok, now)
	if err != nil {
		return Token{}, err
	}
	version, err := c.o.Store.RotateTokens(ctx, tx, row.AccountID, row.Version, sealed)
	if err != nil {
		return Token{}, fmt.Errorf("write rotated tokens: %w", err)
	}
	if err := c.o.Scheduler.ScheduleRefresh(ctx, tx, row.AccountID, version, c.nextDue(now, tok.ExpiresAt)); err != nil {
		return Token{}, fmt.Errorf("schedule next refresh: %w", err)
	}
	if err := c.o.Store.DropStaleRefreshJobs(ctx, tx, row.AccountID, version); err != nil {
		return Token{}, err
	}
	if _, err := c.o.Store.InsertEvent(ctx, tx, row.AccountID, "refreshed", map[string]any{
		"version": version, "access_expires_at": tok.ExpiresAt,
	}); err != nil {
		return Token{}, err
	}
	c.o.Metrics.refreshes.WithLabelValues("ok").Inc()
	t := Token{AccessToken: tok.AccessToken, ExpiresAt: tok.ExpiresAt, Version: version}
	c.cache.put(row.AccountID, t, now)
	c.log.InfoContext(ctx, "refreshed tokens", "account_id", row.AccountID, "version", version, "access_expires_at", tok.ExpiresAt)
	return t, nil
}

// persistReceived retries writing tokens Keap already issued after the
// refresh transaction failed to commit. If another worker meanwhile saw the
// old (now dead) token rejected and marked the account, this write recovers it.
func (c *Coordinator) persistReceived(ctx context.Context, id string, seen int64, tok keap.Token, cause error) (Token, error) {
	ctx = context.WithoutCancel(ctx)
	var out Token
	backoff := 100 * time.Millisecond
	err := cause
	for attempt := 1; attempt <= 6; attempt++ {
		c.log.WarnContext(ctx, "retrying write of refreshed tokens", "account_id", id, "attempt", attempt, "error", err)
		time.Sleep(backoff)
		backoff *= 2
		err = pgx.BeginFunc(ctx, c.o.Pool, func(tx pgx.Tx) error {
			if err := c.o.Store.AdvisoryXactLock(ctx, tx, LockKey(id)); err != nil {
				return err
			}
			row, err := c.o.Store.GetToken(ctx, tx, id)
			if err != nil {
				return err
			}
			if row.Version != seen {
				return fmt.Errorf("version moved from %d to %d while holding unsaved tokens", seen, row.Version)
			}
			if row.Status != store.StatusConnected {
				if err := c.o.Store.SetAccountStatus(ctx, tx, id, store.StatusConnected, ""); err != nil {
					return err
				}
				if err := c.event(ctx, tx, id, "recovered", "refreshed tokens written after a failed commit", nil); err != nil {
					return err
				}
			}
			row.Status = store.StatusConnected
			out, err = c.writeRotation(ctx, tx, row, tok)
			return err
		})
		if err == nil {
			return out, nil
		}
	}
	c.log.ErrorContext(ctx, "lost refreshed tokens: could not store them", "account_id", id, "error", err)
	return Token{}, fmt.Errorf("store refreshed tokens: %w", err)
}

// recordFailure classifies a failed refresh, writes what happened in tx and
// returns the error for callers.
func (c *Coordinator) recordFailure(ctx context.Context, tx pgx.Tx, row store.TokenRow, err error) error {
	id, now := row.AccountID, c.o.Now()
	ke, ok := keap.AsError(err)
	if !ok {
		ke = &keap.Error{Op: "refresh", Kind: keap.Transient, Ambiguous: true, Message: "unclassified failure"}
	}
	if ke.InvalidGrant() {
		// We hold the lock and re-read the row, so the token Keap rejected is
		// the stored one: no other worker won a race with a newer one.
		reason := "keap rejected the stored refresh token (invalid_grant)"
		if row.LastFailureAmbiguous {
			reason += " after an earlier refresh got no answer: keap probably rotated the token and the response was lost"
		}
		c.o.Metrics.refreshes.WithLabelValues("reauth_required").Inc()
		c.cache.drop(id)
		c.log.WarnContext(ctx, "account needs re-authorization", "account_id", id, "reason", reason)
		if err := c.setStatus(ctx, tx, id, store.StatusReauthRequired, reason, map[string]any{
			"keap_error": ke.Code, "keap_description": ke.Description, "after_ambiguous_failure": row.LastFailureAmbiguous,
		}); err != nil {
			return err
		}
		return &Error{Code: CodeReauthRequired, Message: ErrReauthRequired.Message, Err: ke}
	}
	var wait time.Duration
	switch ke.Kind {
	case keap.Permanent:
		// Our client credentials (or request) were refused; the refresh token
		// itself is probably fine. The sweeper tries again later.
		wait = 10 * time.Minute
		c.o.Metrics.refreshes.WithLabelValues("rejected").Inc()
	default:
		wait = Backoff(row.RefreshFailures + 1)
		if ke.RetryAfter > wait {
			wait = ke.RetryAfter
		}
		c.o.Metrics.refreshes.WithLabelValues(ke.Kind.String()).Inc()
	}
	retryAt := now.Add(wait)
	if _, err := c.o.Store.RecordFailure(ctx, tx, id, row.Version, retryAt, ke.Ambiguous, ke.Error()); err != nil {
		return err
	}
	if _, err := c.o.Store.InsertEvent(ctx, tx, id, "refresh_failed", map[string]any{
		"kind": ke.Kind.String(), "status": ke.Status, "keap_error": ke.Code, "ambiguous": ke.Ambiguous, "retry_at": retryAt,
	}); err != nil {
		return err
	}
	if ke.Kind != keap.Permanent {
		if err := c.o.Scheduler.ScheduleRefresh(ctx, tx, id, row.Version, retryAt); err != nil {
			return err
		}
	}
	c.log.WarnContext(ctx, "refresh failed", "account_id", id, "kind", ke.Kind.String(), "error", ke.Error(), "retry_in", wait)
	return unavailable(wait, ke)
}

// Backoff is the wait after the n-th consecutive transient failure:
// 5s doubling to a 10 minute cap, with up to 20% jitter.
func Backoff(n int) time.Duration {
	d := 5 * time.Second
	for i := 1; i < n && d < 10*time.Minute; i++ {
		d *= 2
	}
	d = min(d, 10*time.Minute)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

func unavailable(retry time.Duration, cause error) *Error {
	if retry < time.Second {
		retry = time.Second
	}
	return &Error{Code: CodeKeapUnavailable, Message: "keap did not refresh the token; try again later", RetryAfter: retry, Err: cause}
}

// nextDue is when the next proactive refresh runs: RefreshEvery from now,
// a little earlier by jitter so a fleet connected at once spreads out, and
// never later than the access token's expiry minus the skew.
func (c *Coordinator) nextDue(now, accessExpires time.Time) time.Time {
	jitter := min(c.o.RefreshEvery/50, 10*time.Minute)
	due := now.Add(c.o.RefreshEvery - time.Duration(rand.Int64N(int64(jitter)+1)))
	if limit := accessExpires.Add(-c.o.Skew); due.After(limit) {
		due = limit
	}
	if due.Before(now) {
		due = now
	}
	return due
}

func (c *Coordinator) seal(id string, tok keap.Token, now time.Time) (store.SealedTokens, error) {
	keyID, act, err := c.o.Keyring.Seal(id, "access_token", []byte(tok.AccessToken.Reveal()))
	if err != nil {
		return store.SealedTokens{}, err
	}
	_, rct, err := c.o.Keyring.Seal(id, "refresh_token", []byte(tok.RefreshToken.Reveal()))
	if err != nil {
		return store.SealedTokens{}, err
	}
	return store.SealedTokens{KeyID: keyID, AccessCT: act, RefreshCT: rct, AccessExpiresAt: tok.ExpiresAt, RefreshIssuedAt: now, Scope: tok.Scope}, nil
}

func (c *Coordinator) openAndCache(row store.TokenRow) (Token, error) {
	at, err := c.o.Keyring.Open(row.KeyID, row.AccountID, "access_token", row.AccessTokenCT)
	if err != nil {
		return Token{}, fmt.Errorf("open access token of %s: %w", row.AccountID, err)
	}
	t := Token{AccessToken: seal.Secret(at), ExpiresAt: row.AccessExpiresAt, Version: row.Version}
	c.cache.put(row.AccountID, t, c.o.Now())
	return t, nil
}

// setStatus changes an account's status with an audit event and a
// pg_notify on keapsync_events, all in tx.
func (c *Coordinator) setStatus(ctx context.Context, tx pgx.Tx, id, status, reason string, detail map[string]any) error {
	if err := c.o.Store.SetAccountStatus(ctx, tx, id, status, reason); err != nil {
		return err
	}
	return c.event(ctx, tx, id, status, reason, detail)
}

func (c *Coordinator) event(ctx context.Context, tx pgx.Tx, id, kind, reason string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	if reason != "" {
		detail["reason"] = reason
	}
	eventID, err := c.o.Store.InsertEvent(ctx, tx, id, kind, detail)
	if err != nil {
		return err
	}
	if err := c.o.Scheduler.DeliverEvent(ctx, tx, eventID); err != nil {
		return fmt.Errorf("queue notification: %w", err)
	}
	payload, err := json.Marshal(map[string]any{"account_id": id, "event": kind, "reason": reason, "at": c.o.Now()})
	if err != nil {
		return err
	}
	return c.o.Store.Notify(ctx, tx, string(payload))
}

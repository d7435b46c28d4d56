package tokens_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/jobs"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/keapfake"
	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

var ctx = context.Background()

func refreshCalls(h *keaptest.Harness) []keapfake.Request {
	return h.Fake.TokenRequests("refresh_token")
}

func TestFreshTokenNeedsNoKeapCall(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{0, time.Minute} {
		h := keaptest.New(t, keaptest.Options{CacheTTL: ttl})
		pair := h.Connect("acme")
		h.Fake.ResetLog()
		for range 100 {
			tok, err := h.Tokens.Get(ctx, "acme")
			require.NoError(t, err)
			require.Equal(t, pair.AccessToken, tok.AccessToken.Reveal())
		}
		h.Clock.Advance(20 * time.Hour) // still well inside the 24 h lifetime
		_, err := h.Tokens.Get(ctx, "acme")
		require.NoError(t, err)
		require.Empty(t, h.Fake.Requests(), "cache ttl %v: a fresh token must not touch keap", ttl)
	}
}

func TestExpiredTokenOneRefreshAcrossReplicas(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{CacheTTL: time.Minute})
	old := h.Connect("acme")
	h.Clock.Advance(24 * time.Hour) // access token expired
	h.Fake.SetLatency(150 * time.Millisecond)
	h.Fake.ResetLog()

	replicaB, _, _ := h.NewCoordinator(pgtest.Pool(t, h.DBURL))
	replicaC, _, _ := h.NewCoordinator(pgtest.Pool(t, h.DBURL))
	coords := []*tokens.Coordinator{replicaB, replicaC}
	for range 50 {
		coords = append(coords, h.Tokens)
	}

	var wg sync.WaitGroup
	got := make([]string, len(coords))
	errs := make([]error, len(coords))
	start := make(chan struct{})
	for i, c := range coords {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, err := c.Get(ctx, "acme")
			got[i], errs[i] = tok.AccessToken.Reveal(), err
		}()
	}
	close(start)
	wg.Wait()

	require.Len(t, refreshCalls(h), 1, "exactly one token-endpoint call")
	for i := range coords {
		require.NoError(t, errs[i], "caller %d", i)
		require.Equal(t, got[0], got[i], "caller %d got another token", i)
	}
	require.NotEqual(t, old.AccessToken, got[0])
	row := h.Row("acme")
	require.Equal(t, got[0], h.Open(row, "access_token"))
	require.True(t, h.Fake.RefreshTokenLive(h.Open(row, "refresh_token")), "the row holds the live rotated refresh token")
	require.False(t, h.Fake.RefreshTokenLive(old.RefreshToken))
}

func TestRotationChainSurvivesRestarts(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	pair := h.Connect("acme")
	prev := pair.RefreshToken
	for i := range 3 {
		// A new process each time: nothing survives but the database.
		coord, _, _ := h.NewCoordinator(pgtest.Pool(t, h.DBURL))
		_, err := coord.Refresh(ctx, "acme")
		require.NoError(t, err, "refresh %d", i+1)
		calls := refreshCalls(h)
		require.Len(t, calls, i+1)
		require.Equal(t, prev, calls[i].Form.Get("refresh_token"), "refresh %d must send the previous refresh's new token", i+1)
		prev = h.Open(h.Row("acme"), "refresh_token")
		require.True(t, h.Fake.RefreshTokenLive(prev))
	}
}

func TestRefreshJobInsertedInTheTokenTransaction(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	row := h.Row("acme")
	jobs := h.Jobs("acme")
	require.Len(t, jobs, 1)
	require.Equal(t, row.Version, jobs[0].Version)
	due := h.Clock.Now().Add(21 * time.Hour)
	require.WithinDuration(t, due.Add(-5*time.Minute), jobs[0].ScheduledAt, 6*time.Minute, "due 21 h later, minus a little jitter")
	require.False(t, jobs[0].ScheduledAt.After(due))

	_, err := h.Tokens.Refresh(ctx, "acme")
	require.NoError(t, err)
	row = h.Row("acme")
	jobs = h.Jobs("acme")
	require.Len(t, jobs, 1, "the superseded version's job is gone")
	require.Equal(t, row.Version, jobs[0].Version)

	// Same transaction: the job row and the token row carry the same xmin.
	var same bool
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT (SELECT xmin::text FROM keapsync.oauth_tokens WHERE account_id = 'acme')
		= (SELECT xmin::text FROM keapsync.river_job WHERE id = $1)`, jobs[0].ID).Scan(&same))
	require.True(t, same, "tokens and the next job must commit together")

	// The ops view shows the current version's job.
	var next time.Time
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT next_refresh_at FROM keapsync.account_health WHERE account_id = 'acme'`).Scan(&next))
	require.WithinDuration(t, jobs[0].ScheduledAt, next, time.Millisecond)
}

// failingScheduler fails its first n calls, as a crash between the Keap call
// and the commit would.
type failingScheduler struct {
	mu   sync.Mutex
	n    int
	next tokens.Scheduler
}

func (f *failingScheduler) ScheduleRefresh(ctx context.Context, tx pgx.Tx, id string, v int64, at time.Time) error {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		return errors.New("injected failure before commit")
	}
	return f.next.ScheduleRefresh(ctx, tx, id, v, at)
}

func (f *failingScheduler) DeliverEvent(ctx context.Context, tx pgx.Tx, eventID int64) error {
	return f.next.DeliverEvent(ctx, tx, eventID)
}

func TestConnectIsAtomicWithItsJob(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	coord := tokens.New(tokens.Options{
		Pool: h.Pool, Store: h.Store, Keap: h.Keap(), Keyring: h.Keyring, Logger: h.Log, Now: h.Clock.Now,
		Scheduler: &failingScheduler{n: 1, next: jobs.Scheduler{Client: h.River}},
	})
	p := h.Fake.Mint()
	err := coord.Connect(ctx, "acme", keap.Token{AccessToken: seal.Secret(p.AccessToken), RefreshToken: seal.Secret(p.RefreshToken),
		ExpiresAt: h.Clock.Now().Add(time.Hour), Scope: p.Scope})
	require.Error(t, err)
	_, err = h.Store.GetToken(ctx, h.Pool, "acme")
	require.ErrorIs(t, err, store.ErrNotFound, "no tokens without their job")
	require.Empty(t, h.Jobs("acme"))
}

func TestRotatedTokensSurviveAFailedWrite(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	coord := tokens.New(tokens.Options{
		Pool: h.Pool, Store: h.Store, Keap: h.Keap(), Keyring: h.Keyring, Logger: h.Log, Now: h.Clock.Now,
		Scheduler: &failingScheduler{n: 2, next: jobs.Scheduler{Client: h.River}},
	})
	tok, err := coord.Refresh(ctx, "acme")
	require.NoError(t, err, "the write is retried with the tokens keap already issued")
	require.Len(t, refreshCalls(h), 1, "keap is not asked twice")
	row := h.Row("acme")
	require.Equal(t, tok.AccessToken.Reveal(), h.Open(row, "access_token"))
	require.True(t, h.Fake.RefreshTokenLive(h.Open(row, "refresh_token")))
}

func TestInvalidGrantNeedsReauth(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	listener, err := h.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer listener.Release()
	_, err = listener.Exec(ctx, "LISTEN keapsync_events")
	require.NoError(t, err)
	h.Fake.FailNext("/token", 1, 400, []byte(`{"error": "invalid_grant", "error_description": "Invalid refresh token"}`))
	_, err = h.Tokens.Refresh(ctx, "acme")
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))

	acct, err := h.Store.GetAccount(ctx, h.Pool, "acme")
	require.NoError(t, err)
	require.Equal(t, store.StatusReauthRequired, acct.Status)
	events, err := h.Store.ListEvents(ctx, h.Pool, "acme", 5)
	require.NoError(t, err)
	require.Equal(t, "reauth_required", events[0].Kind)
	require.Equal(t, "invalid_grant", events[0].Detail["keap_error"])

	// No retries: neither callers nor the due job call keap again.
	h.Clock.Advance(25 * time.Hour)
	_, err = h.Tokens.Get(ctx, "acme")
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))
	require.NoError(t, h.Tokens.RefreshDue(ctx, "acme", h.Row("acme").Version))
	require.Len(t, refreshCalls(h), 1)

	// Re-authorizing recovers it.
	h.Connect("acme")
	_, err = h.Tokens.Get(ctx, "acme")
	require.NoError(t, err)
	events, err = h.Store.ListEvents(ctx, h.Pool, "acme", 1)
	require.NoError(t, err)
	require.Equal(t, "recovered", events[0].Kind)

	// Both state changes went out on keapsync_events, in order, after commit.
	for _, want := range []string{"reauth_required", "recovered"} {
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := listener.Conn().WaitForNotification(wait)
		cancel()
		require.NoError(t, err)
		var msg struct {
			AccountID string `json:"account_id"`
			Event     string `json:"event"`
		}
		require.NoError(t, json.Unmarshal([]byte(n.Payload), &msg))
		require.Equal(t, "acme", msg.AccountID)
		require.Equal(t, want, msg.Event)
	}
}

func TestTransientFailureKeepsTokensAndBacksOff(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{KeapTimeout: 300 * time.Millisecond})
	pair := h.Connect("acme")
	before := h.Row("acme")
	h.Clock.Advance(24 * time.Hour)

	h.Fake.FailNext("/token", 1, 502, []byte(`<html>bad gateway</html>`))
	_, err := h.Tokens.Get(ctx, "acme")
	var te *tokens.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, tokens.CodeKeapUnavailable, te.Code)
	require.GreaterOrEqual(t, te.RetryAfter, 5*time.Second)

	after := h.Row("acme")
	require.Equal(t, before.Version, after.Version, "tokens kept")
	require.Equal(t, pair.RefreshToken, h.Open(after, "refresh_token"))
	require.Equal(t, 1, after.RefreshFailures)
	require.NotNil(t, after.RetryAfter)
	require.True(t, after.LastFailureAmbiguous, "a 5xx may have been processed")

	// Within the backoff, callers get 503 without calling keap again.
	calls := len(refreshCalls(h))
	_, err = h.Tokens.Get(ctx, "acme")
	require.Equal(t, tokens.CodeKeapUnavailable, tokens.ErrorCode(err))
	require.Len(t, refreshCalls(h), calls)

	// A retry job for this version waits until the backoff ends.
	jobs := h.Jobs("acme")
	require.Len(t, jobs, 1)
	require.Equal(t, before.Version, jobs[0].Version)

	// A timeout is transient too.
	h.Clock.Advance(time.Minute)
	h.Fake.SetLatency(time.Second)
	_, err = h.Tokens.Get(ctx, "acme")
	require.Equal(t, tokens.CodeKeapUnavailable, tokens.ErrorCode(err))
	require.Equal(t, 2, h.Row("acme").RefreshFailures)
	h.Fake.SetLatency(0)

	// After the backoff, the next caller refreshes with the kept token (the
	// fake gave up on the timed-out request before processing it).
	h.Clock.Advance(time.Hour)
	tok, err := h.Tokens.Get(ctx, "acme")
	require.NoError(t, err)
	require.NotEqual(t, pair.AccessToken, tok.AccessToken.Reveal())
	require.Zero(t, h.Row("acme").RefreshFailures)
}

func TestTransientFailureThenSuccess(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	h.Clock.Advance(24 * time.Hour)
	h.Fake.FailNext("/token", 2, 503, nil)
	for range 2 {
		_, err := h.Tokens.Get(ctx, "acme")
		require.Equal(t, tokens.CodeKeapUnavailable, tokens.ErrorCode(err))
		h.Clock.Advance(11 * time.Minute) // past any backoff
	}
	tok, err := h.Tokens.Get(ctx, "acme")
	require.NoError(t, err)
	row := h.Row("acme")
	require.Equal(t, tok.AccessToken.Reveal(), h.Open(row, "access_token"))
	require.Zero(t, row.RefreshFailures)
	require.Nil(t, row.RetryAfter)
}

func TestLostResponseLeadsToReauthWithReason(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	pair := h.Connect("acme")
	h.Fake.DropAfterProcessNext(1)
	_, err := h.Tokens.Refresh(ctx, "acme")
	require.Equal(t, tokens.CodeKeapUnavailable, tokens.ErrorCode(err))
	require.False(t, h.Fake.RefreshTokenLive(pair.RefreshToken), "keap rotated although we never saw the answer")
	require.True(t, h.Row("acme").LastFailureAmbiguous)

	// The one retry with the same token gets invalid_grant: reauth, no storm.
	_, err = h.Tokens.Refresh(ctx, "acme")
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))
	acct, err := h.Store.GetAccount(ctx, h.Pool, "acme")
	require.NoError(t, err)
	require.Contains(t, *acct.StatusReason, "response was lost")
	require.NoError(t, h.Tokens.RefreshDue(ctx, "acme", h.Row("acme").Version))
	_, err = h.Tokens.Get(ctx, "acme")
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))
	require.Len(t, refreshCalls(h), 2, "no further calls once the account needs re-authorization")
}

func TestStaleJobDoesNothing(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	v := h.Row("acme").Version
	_, err := h.Tokens.Refresh(ctx, "acme")
	require.NoError(t, err)
	h.Fake.ResetLog()
	require.NoError(t, h.Tokens.RefreshDue(ctx, "acme", v))
	require.Empty(t, refreshCalls(h), "a job for a superseded version must not refresh")
	require.NoError(t, h.Tokens.RefreshDue(ctx, "nobody", 1), "an unknown account ends the job")
}

func TestDisconnectDestroysCiphertexts(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{CacheTTL: time.Minute})
	h.Connect("acme")
	_, err := h.Tokens.Get(ctx, "acme") // warm the cache
	require.NoError(t, err)
	require.NoError(t, h.Tokens.Disconnect(ctx, "acme"))
	_, err = h.Tokens.Get(ctx, "acme")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err))
	var n int
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT count(*) FROM keapsync.oauth_tokens").Scan(&n))
	require.Zero(t, n)
	require.Empty(t, h.Jobs("acme"), "no refresh waits for a disconnected account")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(h.Tokens.Disconnect(ctx, "nobody")))
	// Disconnecting again succeeds and records nothing new.
	require.NoError(t, h.Tokens.Disconnect(ctx, "acme"))
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT count(*) FROM keapsync.token_events WHERE account_id = 'acme' AND kind = 'disconnected'").Scan(&n))
	require.Equal(t, 1, n)
}

func TestTenantMismatchRefused(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	other := h.Fake.Tenant("zz999").Mint()
	err := h.Tokens.Connect(ctx, "acme", keap.Token{AccessToken: seal.Secret(other.AccessToken), RefreshToken: seal.Secret(other.RefreshToken),
		ExpiresAt: h.Clock.Now().Add(time.Hour), Scope: other.Scope})
	require.Equal(t, tokens.CodeTenantMismatch, tokens.ErrorCode(err))
	require.Equal(t, "ab123.infusionsoft.com", *h.Row("acme").Tenant)
}

func TestLockKeyIsStable(t *testing.T) {
	t.Parallel()
	// Changing the key function would let old and new replicas refresh at
	// once during a deploy: pin it.
	require.Equal(t, tokens.LockKey("acme"), tokens.LockKey("acme"))
	require.NotEqual(t, tokens.LockKey("acme"), tokens.LockKey("acme2"))
	require.Equal(t, int64(7378857525010323403), tokens.LockKey("acme"))
}

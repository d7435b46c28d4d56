// Package keaptest assembles keapsync against a real per-test Postgres
// database and an in-process fake Keap: the pieces every integration test
// needs, a controllable clock, and a log capture that fails the test if any
// token the fake issued shows up in a log line.
package keaptest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/httpapi"
	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/jobs"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/keapfake"
	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// Test credentials shared by the fake and the client.
const (
	ClientID     = "test-client-id"
	ClientSecret = "test-client-secret"
	RedirectURI  = "http://localhost:8080/oauth/callback"
	// Keys is a TOKEN_ENCRYPTION_KEYS value for tests only.
	Keys = "k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA="
)

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// LogBuffer collects log output safely from many goroutines.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Options tune a Harness.
type Options struct {
	CacheTTL    time.Duration // default 0: cache off, so tests see the database
	KeapTimeout time.Duration // default 2s
	// Notifier receives account state changes (deliver_event jobs); nil: none.
	Notifier *notify.Notifier
}

// Harness is keapsync wired for one test.
type Harness struct {
	T       testing.TB
	DBURL   string
	Pool    *pgxpool.Pool
	Store   *store.Store
	Fake    *keapfake.Server
	FakeURL string
	Clock   *Clock
	Logs    *LogBuffer
	Log     *slog.Logger
	Keyring *seal.Keyring
	River   *river.Client[pgx.Tx]
	Deps    *jobs.Deps
	Tokens  *tokens.Coordinator
	Inbox   *inbox.Inbox
	Hooks   *hooks.Manager
	// APIURL is keapsync's HTTP API once Serve has been called.
	APIURL string
	opts   Options
}

// APIKey is the bearer key of the server Serve starts.
const APIKey = "keaptest-internal-api-key"

// New builds a Harness; everything is torn down when the test ends.
func New(t testing.TB, o Options) *Harness {
	t.Helper()
	if o.KeapTimeout <= 0 {
		o.KeapTimeout = 2 * time.Second
	}
	h := &Harness{T: t, opts: o, Clock: NewClock(time.Now().UTC().Truncate(time.Second)), Logs: &LogBuffer{}}
	h.Log = slog.New(slog.NewJSONHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.DBURL = pgtest.New(t)
	h.Pool = pgtest.Pool(t, h.DBURL)
	var err error
	if h.Store, err = store.New(); err != nil {
		t.Fatal(err)
	}
	if h.Keyring, err = seal.ParseKeyring(Keys); err != nil {
		t.Fatal(err)
	}
	h.Fake = keapfake.New(keapfake.Options{ClientID: ClientID, ClientSecret: ClientSecret, Now: h.Clock.Now})
	srv := httptest.NewServer(h.Fake)
	t.Cleanup(srv.Close)
	h.FakeURL = srv.URL
	h.Tokens, h.River, h.Deps = h.NewCoordinator(h.Pool)
	h.Inbox, h.Hooks = h.Deps.Inbox, h.Deps.Hooks
	t.Cleanup(h.checkLogs)
	return h
}

// Serve starts keapsync's HTTP API on a loopback port, so the fake can reach
// the webhook receiver (handshakes, deliveries); hook URLs point at it.
func (h *Harness) Serve() string {
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{
		Pool: h.Pool, Store: h.Store, Tokens: h.Tokens, Hooks: h.Hooks, Inbox: h.Inbox,
		Logger: h.Log, APIKey: APIKey, OAuthRateLimit: 10000,
	}))
	h.T.Cleanup(srv.Close)
	h.APIURL = srv.URL
	h.Hooks.PublicBaseURL = srv.URL
	return srv.URL
}

// Keap returns a client of the fake.
func (h *Harness) Keap() *keap.Client {
	return keap.New(keap.Options{
		ClientID: ClientID, ClientSecret: ClientSecret, RedirectURI: RedirectURI,
		AuthURL: h.FakeURL + "/app/oauth/authorize", TokenURL: h.FakeURL + "/token", APIURL: h.FakeURL + "/crm/rest",
		Timeout: h.opts.KeapTimeout, Now: h.Clock.Now,
	})
}

// NewCoordinator builds another coordinator ("replica") on pool, with its
// own River client (not started) sharing the fake, keys, clock and logs.
func (h *Harness) NewCoordinator(pool *pgxpool.Pool) (*tokens.Coordinator, *river.Client[pgx.Tx], *jobs.Deps) {
	deps := &jobs.Deps{Pool: pool, Store: h.Store, Logger: h.Log, Now: h.Clock.Now, Skew: 5 * time.Minute, Every: 21 * time.Hour,
		Notifier: h.opts.Notifier}
	rc, err := jobs.NewClient(deps, jobs.Options{})
	if err != nil {
		h.T.Fatal(err)
	}
	kc := h.Keap()
	deps.Tokens = tokens.New(tokens.Options{
		Pool: pool, Store: h.Store, Keap: kc, Keyring: h.Keyring, Scheduler: jobs.Scheduler{Client: rc, Notifier: h.opts.Notifier},
		Logger: h.Log, Now: h.Clock.Now, CacheTTL: h.opts.CacheTTL,
	})
	deps.Inbox = &inbox.Inbox{Pool: pool, Store: h.Store, Enqueuer: jobs.Scheduler{Client: rc}, Tokens: deps.Tokens, Keap: kc, Logger: h.Log}
	deps.Hooks = &hooks.Manager{Pool: pool, Store: h.Store, Tokens: deps.Tokens, Keap: kc, Keyring: h.Keyring,
		PublicBaseURL: "http://127.0.0.1:1", Logger: h.Log}
	return deps.Tokens, rc, deps
}

// Connect gives account id a live token pair from the fake, stored as the
// OAuth callback would store it.
func (h *Harness) Connect(id string) keapfake.TokenPair {
	h.T.Helper()
	p := h.Fake.Mint()
	err := h.Tokens.Connect(context.Background(), id, keap.Token{
		AccessToken: seal.Secret(p.AccessToken), RefreshToken: seal.Secret(p.RefreshToken),
		ExpiresAt: h.Clock.Now().Add(time.Duration(p.ExpiresIn) * time.Second), Scope: p.Scope,
	})
	if err != nil {
		h.T.Fatalf("connect %s: %v", id, err)
	}
	return p
}

// SetStatus puts account id in status directly, as if it had got there.
func (h *Harness) SetStatus(id, status string) {
	h.T.Helper()
	if _, err := h.Pool.Exec(context.Background(), "UPDATE keapsync.accounts SET status = $2 WHERE id = $1", id, status); err != nil {
		h.T.Fatal(err)
	}
}

// Row reads an account's token row.
func (h *Harness) Row(id string) store.TokenRow {
	h.T.Helper()
	row, err := h.Store.GetToken(context.Background(), h.Pool, id)
	if err != nil {
		h.T.Fatalf("read row %s: %v", id, err)
	}
	return row
}

// Open decrypts a field of an account's row.
func (h *Harness) Open(row store.TokenRow, field string) string {
	h.T.Helper()
	ct := row.AccessTokenCT
	if field == "refresh_token" {
		ct = row.RefreshTokenCT
	}
	pt, err := h.Keyring.Open(row.KeyID, row.AccountID, field, ct)
	if err != nil {
		h.T.Fatalf("open %s of %s: %v", field, row.AccountID, err)
	}
	return string(pt)
}

// Jobs lists refresh_token jobs of an account, oldest first.
func (h *Harness) Jobs(id string) []Job {
	h.T.Helper()
	rows, err := h.Pool.Query(context.Background(), `SELECT id, (args->>'version')::bigint, state::text, scheduled_at
		FROM keapsync.river_job WHERE kind = 'refresh_token' AND args->>'account_id' = $1 ORDER BY id`, id)
	if err != nil {
		h.T.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Job])
	if err != nil {
		h.T.Fatal(err)
	}
	return out
}

// Job is a refresh_token job row.
type Job struct {
	ID          int64
	Version     int64
	State       string
	ScheduledAt time.Time
}

// Secrets is every token and code value the fake has issued or been sent.
func (h *Harness) Secrets() []string {
	set := map[string]bool{}
	for _, s := range h.Fake.IssuedSecrets() {
		set[s] = true
	}
	for _, r := range h.Fake.Requests() {
		for _, k := range []string{"refresh_token", "code", "client_secret"} {
			if v := r.Form.Get(k); v != "" {
				set[v] = true
			}
		}
		if r.Bearer != "" {
			set[r.Bearer] = true
		}
	}
	set[ClientSecret] = true
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	return out
}

// LeakedSecrets returns the secrets that appear in text.
func (h *Harness) LeakedSecrets(text string) []string {
	var leaked []string
	for _, s := range h.Secrets() {
		if len(s) >= 8 && strings.Contains(text, s) {
			leaked = append(leaked, s[:4]+"…")
		}
	}
	return leaked
}

func (h *Harness) checkLogs() {
	logs := h.Logs.String()
	if leaked := h.LeakedSecrets(logs); len(leaked) > 0 {
		h.T.Errorf("log output contains %d secret value(s): %v", len(leaked), leaked)
	}
	// Every line must be JSON: a half-written or interleaved line would
	// escape the scan above.
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			h.T.Errorf("log line is not JSON: %.120q", line)
		}
	}
}

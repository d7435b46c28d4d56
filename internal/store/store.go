// Package store runs keapsync's SQL (from sql/queries) against Postgres and
// turns pgx results into typed rows and error kinds. It holds no state but
// the parsed queries; every method takes the DBTX to run on, so the caller
// decides what shares a transaction.
package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	keapsql "github.com/keapsync/keapsync/sql"
)

// ErrNotFound is returned when the row asked for does not exist.
var ErrNotFound = errors.New("not found")

// DBTX is what a query runs on: a pool, a connection or a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store runs named queries.
type Store struct {
	q map[string]string
}

// New parses the embedded queries.
func New() (*Store, error) {
	q, err := keapsql.Queries()
	if err != nil {
		return nil, fmt.Errorf("load queries: %w", err)
	}
	return &Store{q: q}, nil
}

func (s *Store) sql(name string) string {
	q, ok := s.q[name]
	if !ok {
		// A missing query is a programming error caught by any test that
		// touches the method; failing loudly beats running an empty string.
		panic("store: unknown query " + name)
	}
	return q
}

// Account is a row of keapsync.accounts.
type Account struct {
	ID           string    `db:"id"`
	Tenant       *string   `db:"tenant"`
	Status       string    `db:"status"`
	StatusReason *string   `db:"status_reason"`
	CreatedAt    time.Time `db:"created_at"`
	UpdatedAt    time.Time `db:"updated_at"`
}

// Account statuses.
const (
	StatusConnected      = "connected"
	StatusReauthRequired = "reauth_required"
	StatusDisconnected   = "disconnected"
)

// TokenRow is an account's sealed tokens joined with its status.
type TokenRow struct {
	AccountID            string     `db:"account_id"`
	Tenant               *string    `db:"tenant"`
	Status               string     `db:"status"`
	KeyID                string     `db:"key_id"`
	AccessTokenCT        []byte     `db:"access_token_ct"`
	RefreshTokenCT       []byte     `db:"refresh_token_ct"`
	AccessExpiresAt      time.Time  `db:"access_expires_at"`
	RefreshIssuedAt      time.Time  `db:"refresh_issued_at"`
	Scope                string     `db:"scope"`
	Version              int64      `db:"version"`
	RefreshFailures      int        `db:"refresh_failures"`
	RetryAfter           *time.Time `db:"retry_after"`
	LastFailureAmbiguous bool       `db:"last_failure_ambiguous"`
}

// SealedTokens is what gets written when tokens change.
type SealedTokens struct {
	KeyID           string
	AccessCT        []byte
	RefreshCT       []byte
	AccessExpiresAt time.Time
	RefreshIssuedAt time.Time
	Scope           string
}

// Health is a row of the keapsync.account_health view.
type Health struct {
	AccountID        string     `db:"account_id" json:"account_id"`
	Tenant           *string    `db:"tenant" json:"tenant"`
	Status           string     `db:"status" json:"status"`
	StatusReason     *string    `db:"status_reason" json:"status_reason,omitempty"`
	Version          *int64     `db:"version" json:"version,omitempty"`
	AccessExpiresAt  *time.Time `db:"access_expires_at" json:"access_expires_at,omitempty"`
	RefreshIssuedAt  *time.Time `db:"refresh_issued_at" json:"refresh_issued_at,omitempty"`
	RefreshedAt      *time.Time `db:"refreshed_at" json:"refreshed_at,omitempty"`
	RefreshFailures  *int       `db:"refresh_failures" json:"refresh_failures,omitempty"`
	RetryAfter       *time.Time `db:"retry_after" json:"retry_after,omitempty"`
	LastError        *string    `db:"last_error" json:"last_error,omitempty"`
	NextRefreshAt    *time.Time `db:"next_refresh_at" json:"next_refresh_at,omitempty"`
	NextRefreshState *string    `db:"next_refresh_state" json:"next_refresh_state,omitempty"`
	Health           string     `db:"health" json:"health"`
}

// Event is a row of the audit trail.
type Event struct {
	ID        int64          `db:"id" json:"id"`
	AccountID string         `db:"account_id" json:"account_id"`
	Kind      string         `db:"kind" json:"kind"`
	Detail    map[string]any `db:"detail" json:"detail"`
	CreatedAt time.Time      `db:"created_at" json:"created_at"`
}

// SweepCandidate is an account the sweeper should make sure has a due refresh job.
type SweepCandidate struct {
	AccountID       string    `db:"account_id"`
	Version         int64     `db:"version"`
	AccessExpiresAt time.Time `db:"access_expires_at"`
	RefreshIssuedAt time.Time `db:"refresh_issued_at"`
	Unscheduled     bool      `db:"unscheduled"`
}

func one[T any](ctx context.Context, db DBTX, q string, args ...any) (T, error) {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[T])
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	return v, err
}

func many[T any](ctx context.Context, db DBTX, q string, args ...any) ([]T, error) {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[T])
}

func scalar[T any](ctx context.Context, db DBTX, q string, args ...any) (T, error) {
	var v T
	err := db.QueryRow(ctx, q, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	return v, err
}

// LockKey is a 64-bit advisory lock key for id within namespace: FNV-1a
// over "keapsync/<namespace>\x00<id>", computed in Go so it never changes
// with Postgres' hashtext. Namespaces keep different locks on one account
// apart ("refresh", "hooks").
func LockKey(namespace, id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("keapsync/" + namespace + "\x00"))
	h.Write([]byte(id))
	return int64(h.Sum64())
}

// AdvisoryXactLock takes a transaction-scoped advisory lock; it is released
// at commit or rollback, so it also works through a transaction pooler.
func (s *Store) AdvisoryXactLock(ctx context.Context, tx pgx.Tx, key int64) error {
	_, err := tx.Exec(ctx, s.sql("AdvisoryXactLock"), key)
	return err
}

// GetAccount returns ErrNotFound for an unknown account.
func (s *Store) GetAccount(ctx context.Context, db DBTX, id string) (Account, error) {
	return one[Account](ctx, db, s.sql("AccountGet"), id)
}

// UpsertConnectedAccount creates the account or marks it connected again.
func (s *Store) UpsertConnectedAccount(ctx context.Context, db DBTX, id, tenant string) error {
	_, err := db.Exec(ctx, s.sql("AccountUpsertConnected"), id, tenant)
	return err
}

// SetAccountStatus changes status and reason.
func (s *Store) SetAccountStatus(ctx context.Context, db DBTX, id, status, reason string) error {
	var r *string
	if reason != "" {
		r = &reason
	}
	_, err := db.Exec(ctx, s.sql("AccountSetStatus"), id, status, r)
	return err
}

// GetToken returns ErrNotFound when the account has no tokens.
func (s *Store) GetToken(ctx context.Context, db DBTX, id string) (TokenRow, error) {
	return one[TokenRow](ctx, db, s.sql("TokenGet"), id)
}

// UpsertTokens stores tokens from a code exchange and returns the new version.
func (s *Store) UpsertTokens(ctx context.Context, db DBTX, id string, t SealedTokens) (int64, error) {
	return scalar[int64](ctx, db, s.sql("TokenUpsert"), id, t.KeyID, t.AccessCT, t.RefreshCT,
		t.AccessExpiresAt, t.RefreshIssuedAt, t.Scope)
}

// RotateTokens writes refreshed tokens if the row is still at version and
// returns the new version; ErrNotFound means the version moved.
func (s *Store) RotateTokens(ctx context.Context, db DBTX, id string, version int64, t SealedTokens) (int64, error) {
	return scalar[int64](ctx, db, s.sql("TokenRotate"), id, version, t.KeyID, t.AccessCT, t.RefreshCT,
		t.AccessExpiresAt, t.RefreshIssuedAt, t.Scope)
}

// RecordFailure notes a failed refresh at version and returns the failure count.
func (s *Store) RecordFailure(ctx context.Context, db DBTX, id string, version int64, retryAfter time.Time, ambiguous bool, msg string) (int, error) {
	return scalar[int](ctx, db, s.sql("TokenRecordFailure"), id, version, retryAfter, ambiguous, msg)
}

// DropStaleRefreshJobs deletes waiting refresh_token jobs of versions
// older than version (all of them with version = MaxInt64).
func (s *Store) DropStaleRefreshJobs(ctx context.Context, db DBTX, id string, version int64) error {
	_, err := db.Exec(ctx, s.sql("RefreshJobsDropStale"), id, version)
	return err
}

// DeleteTokens destroys an account's ciphertexts.
func (s *Store) DeleteTokens(ctx context.Context, db DBTX, id string) error {
	_, err := db.Exec(ctx, s.sql("TokenDelete"), id)
	return err
}

// InsertEvent appends to the audit trail and returns the event's id.
// detail must hold no secret.
func (s *Store) InsertEvent(ctx context.Context, db DBTX, id, kind string, detail map[string]any) (int64, error) {
	if detail == nil {
		detail = map[string]any{}
	}
	var eventID int64
	err := db.QueryRow(ctx, s.sql("EventInsert"), id, kind, detail).Scan(&eventID)
	return eventID, err
}

// GetEvent returns one audit event, or ErrNotFound.
func (s *Store) GetEvent(ctx context.Context, db DBTX, eventID int64) (Event, error) {
	return one[Event](ctx, db, s.sql("EventGet"), eventID)
}

// ListEvents returns an account's newest events first.
func (s *Store) ListEvents(ctx context.Context, db DBTX, id string, limit int) ([]Event, error) {
	return many[Event](ctx, db, s.sql("EventList"), id, limit)
}

// Notify sends payload on the keapsync_events channel when db commits.
func (s *Store) Notify(ctx context.Context, db DBTX, payload string) error {
	_, err := db.Exec(ctx, s.sql("Notify"), payload)
	return err
}

// ListHealth returns every account's health row.
func (s *Store) ListHealth(ctx context.Context, db DBTX) ([]Health, error) {
	return many[Health](ctx, db, s.sql("AccountHealthList"))
}

// GetHealth returns ErrNotFound for an unknown account.
func (s *Store) GetHealth(ctx context.Context, db DBTX, id string) (Health, error) {
	return one[Health](ctx, db, s.sql("AccountHealthGet"), id)
}

// InsertState stores the hash of a new authorization state.
func (s *Store) InsertState(ctx context.Context, db DBTX, hash []byte, accountID string, created, expires time.Time) error {
	_, err := db.Exec(ctx, s.sql("StateInsert"), hash, accountID, created, expires)
	return err
}

// ConsumedState is what consuming a state yields.
type ConsumedState struct {
	AccountID string    `db:"account_id"`
	ExpiresAt time.Time `db:"expires_at"`
}

// ConsumeState marks a state used, once. ErrNotFound means unknown or already used.
func (s *Store) ConsumeState(ctx context.Context, db DBTX, hash []byte, now time.Time) (ConsumedState, error) {
	return one[ConsumedState](ctx, db, s.sql("StateConsume"), hash, now)
}

// StateExists reports whether a state (used or not) was ever issued and not purged.
func (s *Store) StateExists(ctx context.Context, db DBTX, hash []byte) (bool, error) {
	return scalar[bool](ctx, db, s.sql("StateExists"), hash)
}

// PurgeStates deletes states that expired before cutoff.
func (s *Store) PurgeStates(ctx context.Context, db DBTX, cutoff time.Time) (int64, error) {
	tag, err := db.Exec(ctx, s.sql("StatePurge"), cutoff)
	return tag.RowsAffected(), err
}

// SweepCandidates lists connected accounts whose access token expires before
// accessBefore, whose refresh token was issued before refreshBefore, or that
// have no pending refresh job.
func (s *Store) SweepCandidates(ctx context.Context, db DBTX, accessBefore, refreshBefore time.Time) ([]SweepCandidate, error) {
	return many[SweepCandidate](ctx, db, s.sql("SweepCandidates"), accessBefore, refreshBefore)
}

func collectStrings(rows pgx.Rows) ([]string, error) {
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// HealthCounts returns how many accounts keapsync.account_health puts in
// each health class; classes with no account are absent.
func (s *Store) HealthCounts(ctx context.Context, db DBTX) (map[string]int64, error) {
	rows, err := db.Query(ctx, s.sql("AccountHealthCounts"))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	var health string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&health, &n}, func() error {
		out[health] = n
		return nil
	})
	return out, err
}

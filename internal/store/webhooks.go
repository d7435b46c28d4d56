package store

import (
	"context"
	"encoding/json"
	"time"
)

// HookEndpoint is an account's receiver secret (its hash and a sealed copy)
// with the event keys the account is subscribed to.
type HookEndpoint struct {
	AccountID  string   `db:"account_id"`
	SecretHash []byte   `db:"secret_hash"`
	KeyID      string   `db:"key_id"`
	SecretCT   []byte   `db:"secret_ct"`
	EventKeys  []string `db:"event_keys"`
}

// HookSubscription is a row of keapsync.hook_subscriptions.
type HookSubscription struct {
	AccountID        string     `db:"account_id" json:"account_id"`
	KeapKey          string     `db:"keap_key" json:"key"`
	EventKey         string     `db:"event_key" json:"event_key"`
	Status           string     `db:"status" json:"status"`
	LastCheckedAt    *time.Time `db:"last_checked_at" json:"last_checked_at,omitempty"`
	LastVerifyAt     *time.Time `db:"last_verify_at" json:"last_verify_at,omitempty"`
	LastVerifyResult *string    `db:"last_verify_result" json:"last_verify_result,omitempty"`
	CreatedAt        time.Time  `db:"created_at" json:"created_at"`
}

// InboxEvent is a row of keapsync.webhook_events.
type InboxEvent struct {
	ID         int64           `db:"id"`
	AccountID  string          `db:"account_id"`
	EventKey   string          `db:"event_key"`
	ObjectType string          `db:"object_type"`
	ObjectID   int64           `db:"object_id"`
	OccurredAt *time.Time      `db:"occurred_at"`
	ObjectKey  json.RawMessage `db:"object_key"`
	Status     string          `db:"status"`
	Attempts   int             `db:"attempts"`
}

// Contact is what gets written to public.keap_contacts.
type Contact struct {
	AccountID     string
	KeapID        int64
	Email         *string
	GivenName     *string
	FamilyName    *string
	CompanyName   *string
	Data          json.RawMessage
	KeapUpdatedAt *time.Time
}

// GetHookEndpoint returns ErrNotFound when the account has no receiver yet.
func (s *Store) GetHookEndpoint(ctx context.Context, db DBTX, accountID string) (HookEndpoint, error) {
	return one[HookEndpoint](ctx, db, s.sql("HookEndpointGet"), accountID)
}

// InsertHookEndpoint stores a receiver secret unless one exists.
func (s *Store) InsertHookEndpoint(ctx context.Context, db DBTX, e HookEndpoint) error {
	_, err := db.Exec(ctx, s.sql("HookEndpointInsert"), e.AccountID, e.SecretHash, e.KeyID, e.SecretCT)
	return err
}

// DeleteHookEndpoint forgets the receiver secret and every subscription
// row: the receiver URL stops working at once.
func (s *Store) DeleteHookEndpoint(ctx context.Context, db DBTX, accountID string) error {
	if _, err := db.Exec(ctx, s.sql("HookSubscriptionDeleteAll"), accountID); err != nil {
		return err
	}
	_, err := db.Exec(ctx, s.sql("HookEndpointDelete"), accountID)
	return err
}

// UpsertHookSubscription records a subscription and the status Keap reported.
func (s *Store) UpsertHookSubscription(ctx context.Context, db DBTX, accountID, key, eventKey, status string) error {
	_, err := db.Exec(ctx, s.sql("HookSubscriptionUpsert"), accountID, key, eventKey, status)
	return err
}

// ListHookSubscriptions returns an account's subscriptions.
func (s *Store) ListHookSubscriptions(ctx context.Context, db DBTX, accountID string) ([]HookSubscription, error) {
	return many[HookSubscription](ctx, db, s.sql("HookSubscriptionList"), accountID)
}

// DeleteHookSubscription forgets one subscription.
func (s *Store) DeleteHookSubscription(ctx context.Context, db DBTX, accountID, key string) error {
	_, err := db.Exec(ctx, s.sql("HookSubscriptionDelete"), accountID, key)
	return err
}

// RecordHookVerify notes the outcome of asking Keap to re-verify a hook.
func (s *Store) RecordHookVerify(ctx context.Context, db DBTX, accountID, key, status, result string) error {
	_, err := db.Exec(ctx, s.sql("HookSubscriptionRecordVerify"), accountID, key, status, result)
	return err
}

// HookAccounts lists connected accounts that have subscriptions.
func (s *Store) HookAccounts(ctx context.Context, db DBTX) ([]string, error) {
	rows, err := db.Query(ctx, s.sql("HookAccounts"))
	if err != nil {
		return nil, err
	}
	return collectStrings(rows)
}

// InsertInbox stores one delivery's object keys and returns the ids of the
// rows that were new (duplicates of earlier deliveries are skipped).
func (s *Store) InsertInbox(ctx context.Context, db DBTX, accountID, eventKey, objectType string, ids []int64, occurred []*time.Time, keys []json.RawMessage) ([]int64, error) {
	rows, err := db.Query(ctx, s.sql("InboxInsert"), accountID, eventKey, objectType, ids, occurred, keys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// GetInboxEvent returns ErrNotFound for an unknown id.
func (s *Store) GetInboxEvent(ctx context.Context, db DBTX, id int64) (InboxEvent, error) {
	return one[InboxEvent](ctx, db, s.sql("InboxGet"), id)
}

// FinishInboxEvent sets a final status ("done" or "failed").
func (s *Store) FinishInboxEvent(ctx context.Context, db DBTX, id int64, status string, lastErr *string) error {
	_, err := db.Exec(ctx, s.sql("InboxFinish"), id, status, lastErr)
	return err
}

// RecordInboxAttempt counts an attempt that will be retried.
func (s *Store) RecordInboxAttempt(ctx context.Context, db DBTX, id int64, lastErr string) error {
	_, err := db.Exec(ctx, s.sql("InboxAttempt"), id, lastErr)
	return err
}

// UpsertContact writes a contact unless the stored one is newer or was
// deleted later; it reports whether a row changed.
func (s *Store) UpsertContact(ctx context.Context, db DBTX, c Contact) (bool, error) {
	tag, err := db.Exec(ctx, s.sql("ContactUpsert"), c.AccountID, c.KeapID, c.Email, c.GivenName, c.FamilyName, c.CompanyName, c.Data, c.KeapUpdatedAt)
	return tag.RowsAffected() > 0, err
}

// SoftDeleteContact marks an existing contact deleted at `at`.
func (s *Store) SoftDeleteContact(ctx context.Context, db DBTX, accountID string, keapID int64, at time.Time) (bool, error) {
	tag, err := db.Exec(ctx, s.sql("ContactSoftDelete"), accountID, keapID, at)
	return tag.RowsAffected() > 0, err
}

// UpsertObject keeps an object of a type keapsync does not sync in detail.
func (s *Store) UpsertObject(ctx context.Context, db DBTX, accountID, objectType string, id int64, eventKey string, data json.RawMessage, occurred *time.Time) error {
	_, err := db.Exec(ctx, s.sql("ObjectUpsert"), accountID, objectType, id, eventKey, data, occurred)
	return err
}

// SyncedCounts returns how many rows public.keap_contacts and
// public.keap_objects hold, by table name.
func (s *Store) SyncedCounts(ctx context.Context, db DBTX) (map[string]int64, error) {
	var contacts, objects int64
	if err := db.QueryRow(ctx, s.sql("SyncedCounts")).Scan(&contacts, &objects); err != nil {
		return nil, err
	}
	return map[string]int64{"keap_contacts": contacts, "keap_objects": objects}, nil
}

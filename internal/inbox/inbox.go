package inbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// Enqueuer inserts one process_webhook_event job per inbox row, in tx.
// internal/jobs implements it.
type Enqueuer interface {
	EnqueueEvents(ctx context.Context, tx pgx.Tx, accountID string, eventIDs []int64) error
}

// Inbox stores deliveries and processes their rows.
type Inbox struct {
	Pool     *pgxpool.Pool
	Store    *store.Store
	Enqueuer Enqueuer
	Tokens   *tokens.Coordinator
	Keap     *keap.Client
	Logger   *slog.Logger
}

// Ingest stores a delivery for accountID: one row per new object key and one
// job per row, committed together. It returns how many keys were new and how
// many were duplicates of earlier deliveries.
func (in *Inbox) Ingest(ctx context.Context, accountID string, d Delivery) (accepted, duplicates int, err error) {
	ids := make([]int64, len(d.Objects))
	times := make([]*time.Time, len(d.Objects))
	keys := make([]json.RawMessage, len(d.Objects))
	for i, o := range d.Objects {
		ids[i], times[i], keys[i] = o.ID, o.Timestamp, o.Raw
	}
	err = pgx.BeginFunc(ctx, in.Pool, func(tx pgx.Tx) error {
		newIDs, err := in.Store.InsertInbox(ctx, tx, accountID, d.EventKey, d.ObjectType, ids, times, keys)
		if err != nil {
			return fmt.Errorf("store delivery: %w", err)
		}
		accepted = len(newIDs)
		if accepted == 0 {
			return nil
		}
		return in.Enqueuer.EnqueueEvents(ctx, tx, accountID, newIDs)
	})
	if err != nil {
		return 0, 0, err
	}
	return accepted, len(d.Objects) - accepted, nil
}

// RetryLater wraps failures after which the event stays pending and is
// tried again later; After says when, if known.
type RetryLater struct {
	After  time.Duration
	Reason string
	Err    error
}

func (e *RetryLater) Error() string { return "retry later: " + e.Reason }
func (e *RetryLater) Unwrap() error { return e.Err }

// Process handles one inbox row. Contacts are fetched from Keap by id and
// written to public.keap_contacts (an older version never overwrites a newer
// one; a 404 is a deletion); other object types are kept as their raw object
// key in public.keap_objects. A row already processed is left alone.
func (in *Inbox) Process(ctx context.Context, eventID int64) error {
	ev, err := in.Store.GetInboxEvent(ctx, in.Pool, eventID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // nothing to do: the row is gone
	}
	if err != nil {
		return err
	}
	if ev.Status != "pending" {
		return nil
	}
	if ev.ObjectType != "contact" {
		return in.settle(ctx, ev.ID, func(tx pgx.Tx) error {
			return in.Store.UpsertObject(ctx, tx, ev.AccountID, ev.ObjectType, ev.ObjectID, ev.EventKey, ev.ObjectKey, ev.OccurredAt)
		})
	}
	raw, err := in.fetchContact(ctx, ev)
	var ke *keap.Error
	switch {
	case errors.As(err, &ke) && ke.NotFound():
		// Deleted at Keap (or never existed, for a forged id): soft-delete
		// what we have, create nothing.
		at := time.Now()
		if ev.OccurredAt != nil {
			at = *ev.OccurredAt
		}
		return in.settle(ctx, ev.ID, func(tx pgx.Tx) error {
			_, err := in.Store.SoftDeleteContact(ctx, tx, ev.AccountID, ev.ObjectID, at)
			return err
		})
	case err != nil:
		return in.retryable(ctx, ev, err)
	}
	raw, err = storable(raw)
	if err != nil {
		msg := "contact from keap cannot be stored: " + err.Error()
		return in.Store.FinishInboxEvent(ctx, in.Pool, ev.ID, "failed", &msg)
	}
	c, err := contactFrom(ev.AccountID, ev.ObjectID, raw)
	if err != nil {
		msg := err.Error()
		_ = in.Store.FinishInboxEvent(ctx, in.Pool, ev.ID, "failed", &msg)
		return err
	}
	err = in.settle(ctx, ev.ID, func(tx pgx.Tx) error {
		_, err := in.Store.UpsertContact(ctx, tx, c)
		return err
	})
	if err != nil {
		_ = in.Store.RecordInboxAttempt(ctx, in.Pool, ev.ID, err.Error())
	}
	return err
}

// settle runs write and marks the inbox row done in one transaction.
func (in *Inbox) settle(ctx context.Context, eventID int64, write func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, in.Pool, func(tx pgx.Tx) error {
		if err := write(tx); err != nil {
			return err
		}
		return in.Store.FinishInboxEvent(ctx, tx, eventID, "done", nil)
	})
}

// fetchContact gets the contact with the account's token; a 401 gets one
// forced refresh through the coordinator and one more try.
func (in *Inbox) fetchContact(ctx context.Context, ev store.InboxEvent) (json.RawMessage, error) {
	tok, err := in.Tokens.Get(ctx, ev.AccountID)
	if err != nil {
		return nil, err
	}
	raw, err := in.Keap.GetContact(ctx, tok.AccessToken, ev.ObjectID)
	if ke, ok := keap.AsError(err); ok && ke.Unauthorized() {
		in.Logger.InfoContext(ctx, "keap refused the access token; refreshing once", "account_id", ev.AccountID)
		if tok, err = in.Tokens.Refresh(ctx, ev.AccountID); err != nil {
			return nil, err
		}
		raw, err = in.Keap.GetContact(ctx, tok.AccessToken, ev.ObjectID)
	}
	return raw, err
}

// retryable records the attempt and classifies err for the job.
func (in *Inbox) retryable(ctx context.Context, ev store.InboxEvent, err error) error {
	_ = in.Store.RecordInboxAttempt(ctx, in.Pool, ev.ID, err.Error())
	var te *tokens.Error
	if errors.As(err, &te) {
		switch te.Code {
		case tokens.CodeAccountNotFound:
			// Disconnected: nothing can fetch this object any more.
			msg := "account not connected"
			return in.Store.FinishInboxEvent(ctx, in.Pool, ev.ID, "failed", &msg)
		case tokens.CodeReauthRequired:
			// Pending, not failed: processed once the account is re-authorized.
			return &RetryLater{After: 5 * time.Minute, Reason: "account needs re-authorization", Err: err}
		case tokens.CodeKeapUnavailable:
			return &RetryLater{After: te.RetryAfter, Reason: "keap unavailable for token refresh", Err: err}
		}
	}
	if ke, ok := keap.AsError(err); ok && ke.Kind == keap.Throttled {
		return &RetryLater{After: ke.RetryAfter, Reason: "keap throttled the request", Err: err}
	}
	return err
}

// storable re-encodes JSON from Keap so Postgres' jsonb accepts it: invalid
// UTF-16 surrogates become U+FFFD and NUL characters, which jsonb refuses,
// become U+FFFD too.
func storable(raw json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.ReplaceAll(out, []byte(`\u0000`), []byte(`\ufffd`)), nil
}

// FailEvent marks a row failed for good (the job ran out of attempts).
func (in *Inbox) FailEvent(ctx context.Context, eventID int64, reason string) error {
	return in.Store.FinishInboxEvent(ctx, in.Pool, eventID, "failed", &reason)
}

// contactFrom picks the key columns out of a v1 contact. The whole object is
// kept in data.
func contactFrom(accountID string, id int64, raw json.RawMessage) (store.Contact, error) {
	var v struct {
		ID             int64   `json:"id"`
		GivenName      *string `json:"given_name"`
		FamilyName     *string `json:"family_name"`
		LastUpdated    string  `json:"last_updated"`
		EmailAddresses []struct {
			Email string `json:"email"`
			Field string `json:"field"`
		} `json:"email_addresses"`
		Company *struct {
			Name *string `json:"company_name"`
		} `json:"company"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return store.Contact{}, fmt.Errorf("contact %d: unreadable JSON from keap", id)
	}
	if v.ID != id {
		return store.Contact{}, fmt.Errorf("contact %d: keap returned contact %d", id, v.ID)
	}
	c := store.Contact{AccountID: accountID, KeapID: id, GivenName: v.GivenName, FamilyName: v.FamilyName, Data: raw}
	for _, e := range v.EmailAddresses {
		if e.Email != "" && (c.Email == nil || e.Field == "EMAIL1") {
			email := e.Email
			c.Email = &email
		}
	}
	if v.Company != nil {
		c.CompanyName = v.Company.Name
	}
	if t, err := ParseTime(v.LastUpdated); err == nil {
		c.KeapUpdatedAt = &t
	}
	return c, nil
}

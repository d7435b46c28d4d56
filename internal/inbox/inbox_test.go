package inbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

var ctx = context.Background()

func ingest(t *testing.T, h *keaptest.Harness, body string) (int, int) {
	t.Helper()
	d, err := inbox.Parse([]byte(body))
	require.NoError(t, err)
	a, dup, err := h.Inbox.Ingest(ctx, "acme", d)
	require.NoError(t, err)
	return a, dup
}

func count(t *testing.T, h *keaptest.Harness, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, h.Pool.QueryRow(ctx, q, args...).Scan(&n))
	return n
}

func TestIngestStoresRowsAndJobsTogether(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	body := string(fixture(t, "hook_delivery_contact_add.json"))
	a, dup := ingest(t, h, body)
	require.Equal(t, 4, a)
	require.Zero(t, dup)
	require.Equal(t, 4, count(t, h, "SELECT count(*) FROM keapsync.webhook_events WHERE status = 'pending'"))
	require.Equal(t, 4, count(t, h, "SELECT count(*) FROM keapsync.river_job WHERE kind = 'process_webhook_event'"))
	// One transaction: every inbox row and every job carry the same xmin.
	require.Equal(t, 1, count(t, h, `SELECT count(DISTINCT x) FROM (
		SELECT xmin::text AS x FROM keapsync.webhook_events
		UNION ALL SELECT xmin::text FROM keapsync.river_job WHERE kind = 'process_webhook_event') t`))
	// Each job names its own row.
	require.Equal(t, 4, count(t, h, `SELECT count(*) FROM keapsync.river_job j JOIN keapsync.webhook_events e
		ON e.id = (j.args->>'event_id')::bigint AND e.account_id = j.args->>'account_id'`))

	// The same body again: nothing new, still acknowledged.
	a, dup = ingest(t, h, body)
	require.Zero(t, a)
	require.Equal(t, 4, dup)
	require.Equal(t, 4, count(t, h, "SELECT count(*) FROM keapsync.river_job WHERE kind = 'process_webhook_event'"))

	// 1,000 objects in one delivery.
	a, _ = ingest(t, h, keys(1000))
	require.Equal(t, 1000, a)
	require.Equal(t, 1004, count(t, h, "SELECT count(*) FROM keapsync.river_job WHERE kind = 'process_webhook_event'"))

	// Without a timestamp nothing tells a replay from a later change of the
	// object: both are kept (a second fetch is harmless, a lost edit is not).
	for range 2 {
		a, dup = ingest(t, h, `{"event_key":"contact.edit","object_keys":[{"id":777}]}`)
		require.Equal(t, 1, a)
		require.Zero(t, dup)
	}
}

func process(t *testing.T, h *keaptest.Harness, event string, id int64, ts time.Time) error {
	t.Helper()
	body := fmt.Sprintf(`{"event_key":%q,"object_keys":[{"id":%d,"timestamp":%q}]}`, event, id, ts.UTC().Format(time.RFC3339Nano))
	d, err := inbox.Parse([]byte(body))
	require.NoError(t, err)
	_, _, err = h.Inbox.Ingest(ctx, "acme", d)
	require.NoError(t, err)
	var eid int64
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT id FROM keapsync.webhook_events WHERE event_key = $1 AND object_id = $2
		ORDER BY id DESC LIMIT 1`, event, id).Scan(&eid))
	return h.Inbox.Process(ctx, eid)
}

type contactRow struct {
	Email, GivenName string
	Deleted          bool
	Updated          *time.Time
	Data             json.RawMessage
}

func readContact(t *testing.T, h *keaptest.Harness, id int64) (contactRow, bool) {
	t.Helper()
	var c contactRow
	err := h.Pool.QueryRow(ctx, `SELECT coalesce(email,''), coalesce(given_name,''), deleted_at IS NOT NULL, keap_updated_at, data
		FROM public.keap_contacts WHERE account_id = 'acme' AND keap_id = $1`, id).Scan(&c.Email, &c.GivenName, &c.Deleted, &c.Updated, &c.Data)
	if err != nil && strings.Contains(err.Error(), "no rows") {
		return c, false
	}
	require.NoError(t, err)
	return c, true
}

func TestContactLifecycleAndOrdering(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	id := h.Fake.PutContact(map[string]any{"given_name": "Ada", "email_addresses": []any{map[string]any{"email": "ada@example.com", "field": "EMAIL1"}},
		"company": map[string]any{"id": 12, "company_name": "Example Co"}})
	t0 := time.Now()
	require.NoError(t, process(t, h, "contact.add", id, t0))
	c, ok := readContact(t, h, id)
	require.True(t, ok)
	require.Equal(t, "Ada", c.GivenName)
	require.Equal(t, "ada@example.com", c.Email)
	require.Contains(t, string(c.Data), "Example Co")

	// Two edits; their events arrive newest first. Each event refetches, and
	// the older event's processing changes nothing.
	h.Fake.PutContact(map[string]any{"id": id, "given_name": "Ada B"})
	h.Fake.PutContact(map[string]any{"id": id, "given_name": "Ada C"})
	require.NoError(t, process(t, h, "contact.edit", id, t0.Add(2*time.Second)))
	c, _ = readContact(t, h, id)
	require.Equal(t, "Ada C", c.GivenName)
	newest := *c.Updated
	require.NoError(t, process(t, h, "contact.edit", id, t0.Add(time.Second)))
	c, _ = readContact(t, h, id)
	require.Equal(t, "Ada C", c.GivenName, "newest data wins")
	require.Equal(t, newest, *c.Updated)

	// Delete, then a stale edit event: it stays deleted.
	h.Fake.DeleteContact(id)
	require.NoError(t, process(t, h, "contact.delete", id, t0.Add(3*time.Second)))
	c, _ = readContact(t, h, id)
	require.True(t, c.Deleted)
	require.NoError(t, process(t, h, "contact.edit", id, t0.Add(4*time.Second)))
	c, _ = readContact(t, h, id)
	require.True(t, c.Deleted, "a stale edit after a delete leaves it deleted")
	require.Zero(t, count(t, h, "SELECT count(*) FROM keapsync.webhook_events WHERE status <> 'done'"))
}

func TestOlderVersionNeverOverwritesNewer(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	id := h.Fake.PutContact(map[string]any{"given_name": "v1"})
	require.NoError(t, process(t, h, "contact.add", id, time.Now()))
	// Pretend the row already holds a version from the future: a fetch of
	// the current (older) version must not replace it.
	_, err := h.Pool.Exec(ctx, `UPDATE public.keap_contacts SET given_name = 'future', keap_updated_at = keap_updated_at + interval '1 hour'`)
	require.NoError(t, err)
	h.Fake.PutContact(map[string]any{"id": id, "given_name": "v2"})
	require.NoError(t, process(t, h, "contact.edit", id, time.Now()))
	c, _ := readContact(t, h, id)
	require.Equal(t, "future", c.GivenName)
}

func TestForgedDeliveryStoresOnlyWhatKeapSays(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	require.NoError(t, process(t, h, "contact.add", 987654, time.Now()))
	_, ok := readContact(t, h, 987654)
	require.False(t, ok, "an invented id creates nothing")

	// A forged delete of a real contact changes nothing either.
	id := h.Fake.PutContact(map[string]any{"given_name": "Real"})
	require.NoError(t, process(t, h, "contact.add", id, time.Now()))
	require.NoError(t, process(t, h, "contact.delete", id, time.Now()))
	c, ok := readContact(t, h, id)
	require.True(t, ok)
	require.False(t, c.Deleted)
	require.Equal(t, "Real", c.GivenName)
}

func TestUnauthorizedFetchRefreshesOnce(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	pair := h.Connect("acme")
	h.Fake.ExpireAccess(pair.AccessToken) // revoked at Keap, still valid by our clock
	id := h.Fake.PutContact(map[string]any{"given_name": "Ada"})
	require.NoError(t, process(t, h, "contact.add", id, time.Now()))
	require.Len(t, h.Fake.TokenRequests("refresh_token"), 1)
	c, ok := readContact(t, h, id)
	require.True(t, ok)
	require.Equal(t, "Ada", c.GivenName)
}

func TestThrottledFetchWaitsThenSucceeds(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	id := h.Fake.PutContact(map[string]any{"given_name": "Ada"})
	h.Fake.ThrottleNext("/crm/rest", 1, "3", nil)
	err := process(t, h, "contact.add", id, time.Now())
	var rl *inbox.RetryLater
	require.ErrorAs(t, err, &rl)
	require.Equal(t, 3*time.Second, rl.After)
	require.Equal(t, 1, count(t, h, "SELECT count(*) FROM keapsync.webhook_events WHERE status = 'pending' AND attempts = 1"))

	var eid int64
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT id FROM keapsync.webhook_events").Scan(&eid))
	require.NoError(t, h.Inbox.Process(ctx, eid))
	_, ok := readContact(t, h, id)
	require.True(t, ok)
}

func TestReauthRequiredLeavesEventsPending(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	h.SetStatus("acme", store.StatusReauthRequired)
	id := h.Fake.PutContact(map[string]any{"given_name": "Ada"})
	err := process(t, h, "contact.add", id, time.Now())
	var rl *inbox.RetryLater
	require.ErrorAs(t, err, &rl)
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))
	require.Equal(t, 1, count(t, h, "SELECT count(*) FROM keapsync.webhook_events WHERE status = 'pending'"))

	h.Connect("acme") // re-authorized
	var eid int64
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT id FROM keapsync.webhook_events").Scan(&eid))
	require.NoError(t, h.Inbox.Process(ctx, eid))
	require.Equal(t, 1, count(t, h, "SELECT count(*) FROM keapsync.webhook_events WHERE status = 'done'"))
}

func TestOtherObjectTypesAreKept(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	require.NoError(t, process(t, h, "invoice.payment.add", 77, time.Now()))
	var typ, data string
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT object_type, data::text FROM public.keap_objects WHERE object_id = 77").Scan(&typ, &data))
	require.Equal(t, "invoice.payment", typ)
	require.Contains(t, data, `"id": 77`)
	require.Empty(t, h.Fake.Requests(), "no fetch for types keapsync does not sync in detail")
}

func TestContactWithNulFromKeapIsStored(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	id := h.Fake.PutContact(map[string]any{"given_name": "nul\u0000name"})
	require.NoError(t, process(t, h, "contact.add", id, time.Now()))
	c, ok := readContact(t, h, id)
	require.True(t, ok)
	require.Equal(t, "nul\ufffdname", c.GivenName)
}

func TestEventsOfADisconnectedAccountFail(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	require.NoError(t, h.Tokens.Disconnect(ctx, "acme"))
	require.NoError(t, process(t, h, "contact.add", 5, time.Now()), "nothing to retry")
	var status, lastErr string
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT status, last_error FROM keapsync.webhook_events").Scan(&status, &lastErr))
	require.Equal(t, "failed", status)
	require.Equal(t, "account not connected", lastErr)
}

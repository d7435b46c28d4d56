package jobs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/jobs"
	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/store"
)

var ctx = context.Background()

func age(t *testing.T, h *keaptest.Harness, id string, d time.Duration) {
	t.Helper()
	_, err := h.Pool.Exec(ctx, `UPDATE keapsync.oauth_tokens SET refresh_issued_at = refresh_issued_at - $2::interval,
		refreshed_at = refreshed_at - $2::interval WHERE account_id = $1`, id, d.String())
	require.NoError(t, err)
}

func TestSweeperRefreshesIdleAndSkipsFresh(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("idle")
	h.Connect("fresh")
	age(t, h, "idle", 31*24*time.Hour)

	n, err := jobs.Sweep(ctx, h.Deps, jobs.Scheduler{Client: h.River})
	require.NoError(t, err)
	require.Equal(t, 1, n)

	idle := h.Jobs("idle")
	require.Len(t, idle, 1)
	require.Equal(t, "available", idle[0].State, "the idle account's refresh is pulled forward to now")
	fresh := h.Jobs("fresh")
	require.Len(t, fresh, 1)
	require.Equal(t, "scheduled", fresh[0].State, "the fresh account keeps its 21 h schedule")
	require.True(t, fresh[0].ScheduledAt.After(h.Clock.Now().Add(20*time.Hour)))

	// A second sweep finds nothing more to do.
	n, err = jobs.Sweep(ctx, h.Deps, jobs.Scheduler{Client: h.River})
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestSweeperRepairsMissingSchedule(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	_, err := h.Pool.Exec(ctx, `DELETE FROM keapsync.river_job`)
	require.NoError(t, err)

	n, err := jobs.Sweep(ctx, h.Deps, jobs.Scheduler{Client: h.River})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	j := h.Jobs("acme")
	require.Len(t, j, 1)
	require.Equal(t, h.Row("acme").Version, j[0].Version)
	require.WithinDuration(t, h.Clock.Now().Add(21*time.Hour), j[0].ScheduledAt, time.Minute, "put back where it belongs")
}

func TestSweeperIgnoresAccountsNeedingReauth(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	h.SetStatus("acme", store.StatusReauthRequired)
	age(t, h, "acme", 40*24*time.Hour)
	n, err := jobs.Sweep(ctx, h.Deps, jobs.Scheduler{Client: h.River})
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestRefreshJobRunsThroughRiver(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	age(t, h, "acme", 31*24*time.Hour)
	before := h.Row("acme")
	_, err := jobs.Sweep(ctx, h.Deps, jobs.Scheduler{Client: h.River})
	require.NoError(t, err)

	require.NoError(t, h.River.Start(ctx))
	t.Cleanup(func() { _ = h.River.Stop(context.Background()) })

	require.Eventually(t, func() bool { return h.Row("acme").Version != before.Version }, 15*time.Second, 50*time.Millisecond,
		"the due job refreshes the account")
	after := h.Row("acme")
	calls := h.Fake.TokenRequests("refresh_token")
	require.Len(t, calls, 1)
	require.Equal(t, h.Open(before, "refresh_token"), calls[0].Form.Get("refresh_token"))
	// The job that ran scheduled its successor for the new version.
	require.Eventually(t, func() bool {
		for _, j := range h.Jobs("acme") {
			if j.Version == after.Version && j.State == "scheduled" {
				return true
			}
		}
		return false
	}, 5*time.Second, 50*time.Millisecond)
}

func TestWebhookJobSnoozesWhileReauthRequired(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	h.SetStatus("acme", store.StatusReauthRequired)
	id := h.Fake.PutContact(map[string]any{"given_name": "Ada"})
	d, err := inbox.Parse([]byte(fmt.Sprintf(`{"event_key":"contact.add","object_keys":[{"id":%d}]}`, id)))
	require.NoError(t, err)
	_, _, err = h.Inbox.Ingest(ctx, "acme", d)
	require.NoError(t, err)

	require.NoError(t, h.River.Start(ctx))
	t.Cleanup(func() { _ = h.River.Stop(context.Background()) })
	require.Eventually(t, func() bool {
		var state string
		var attempt int
		err := h.Pool.QueryRow(ctx, `SELECT state::text, attempt FROM keapsync.river_job WHERE kind = 'process_webhook_event'`).Scan(&state, &attempt)
		return err == nil && state == "scheduled"
	}, 15*time.Second, 50*time.Millisecond, "the job snoozes instead of failing")
	var status string
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT status FROM keapsync.webhook_events`).Scan(&status))
	require.Equal(t, "pending", status)
	var scheduled time.Time
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT scheduled_at FROM keapsync.river_job WHERE kind = 'process_webhook_event'`).Scan(&scheduled))
	require.WithinDuration(t, time.Now().Add(5*time.Minute), scheduled, time.Minute)
}

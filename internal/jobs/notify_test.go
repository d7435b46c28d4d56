package jobs_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/tokens"
)

// delivery is one POST a receiver took.
type delivery struct {
	path, id, kind, bearer string
	signed                 bool
}

// TestStateChangesReachTheReceivers: connecting an account and Keap
// rejecting its refresh token each queue a signed delivery per target in the
// transaction that changed the state; a receiver that fails at first gets
// the same message again until it takes it.
func TestStateChangesReachTheReceivers(t *testing.T) {
	t.Parallel()
	key := []byte("keapsync-test-signing-key-0123")
	var mu sync.Mutex
	var got []delivery
	failed := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + string(body)))
		var msg struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(body, &msg)
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/hook" && !failed[id] {
			failed[id] = true // the first attempt of each message fails
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got = append(got, delivery{path: r.URL.Path, id: id, kind: msg.Type, bearer: r.Header.Get("Authorization"),
			signed: r.Header.Get("webhook-signature") == "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil))})
	}))
	t.Cleanup(srv.Close)
	n := &notify.Notifier{Secret: key, Targets: []notify.Target{
		{Name: notify.TargetWebhook, URL: srv.URL + "/hook"},
		{Name: notify.TargetEdgeFunction, URL: srv.URL + "/functions/v1/keapsync-events", Bearer: "service-role-key"},
	}}
	h := keaptest.New(t, keaptest.Options{Notifier: n})
	h.Connect("acme")

	// Same transaction: the audit event and its delivery jobs share an xmin.
	var jobs int
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT count(*) FROM keapsync.river_job j, keapsync.token_events e
		WHERE j.kind = 'deliver_event' AND (j.args->>'event_id')::bigint = e.id AND e.kind = 'connected'
		AND j.xmin::text = e.xmin::text`).Scan(&jobs))
	require.Equal(t, 2, jobs, "one job per target, committed with the state change")

	h.Fake.FailNext("/token", 1, 400, []byte(`{"error": "invalid_grant", "error_description": "Invalid refresh token"}`))
	_, err := h.Tokens.Refresh(ctx, "acme")
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))

	require.NoError(t, h.River.Start(ctx))
	t.Cleanup(func() { _ = h.River.Stop(context.Background()) })
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 4
	}, 20*time.Second, 50*time.Millisecond, "two events to two targets, the webhook's after one retry each")

	mu.Lock()
	defer mu.Unlock()
	kinds := map[string][]string{}
	ids := map[string]bool{}
	for _, d := range got {
		require.True(t, d.signed, "%+v", d)
		kinds[d.path] = append(kinds[d.path], d.kind)
		ids[d.id] = true
		if d.path == "/hook" {
			require.Empty(t, d.bearer)
			require.True(t, failed[d.id], "the retry carries the failed attempt's webhook-id")
		} else {
			require.Equal(t, "Bearer service-role-key", d.bearer)
		}
	}
	for _, path := range []string{"/hook", "/functions/v1/keapsync-events"} {
		require.ElementsMatch(t, []string{"account.connected", "account.reauth_required"}, kinds[path], path)
	}
	require.Len(t, ids, 2, "one webhook-id per event, the same for both targets and every retry")
}

// TestRefreshesAreNotNotified: only state changes go out, not every refresh.
func TestRefreshesAreNotNotified(t *testing.T) {
	t.Parallel()
	n := &notify.Notifier{Targets: []notify.Target{{Name: notify.TargetWebhook, URL: "http://127.0.0.1:1/hook"}}}
	h := keaptest.New(t, keaptest.Options{Notifier: n})
	h.Connect("acme")
	for range 3 {
		_, err := h.Tokens.Refresh(ctx, "acme")
		require.NoError(t, err)
	}
	var count int
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT count(*) FROM keapsync.river_job WHERE kind = 'deliver_event'`).Scan(&count))
	require.Equal(t, 1, count, "the connect only")
}

package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/store"
)

// The Standard Webhooks specification's published example: a receiver
// library accepts what we send only if we reproduce it exactly.
func TestSignMatchesTheStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	key, err := notify.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	got := notify.Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	require.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", got)
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ=", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65))} {
		_, err := notify.ParseSecret(bad)
		require.Error(t, err, bad)
		require.NotContains(t, err.Error(), "MfKQ9r8G", "the error never repeats the secret")
	}
}

var event = store.Event{ID: 42, AccountID: "acme", Kind: "reauth_required",
	Detail: map[string]any{"reason": "keap rejected the stored refresh token"}, CreatedAt: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}

type received struct {
	header http.Header
	body   []byte
}

func receiver(t *testing.T, status int) (string, chan received) {
	t.Helper()
	got := make(chan received, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Clone(), b}
		if status == http.StatusFound {
			http.Redirect(w, r, "/elsewhere", status)
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

func TestSendSignsTheStandardWay(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef01234567")
	url, got := receiver(t, http.StatusNoContent)
	now := time.Unix(1767225600, 0)
	n := &notify.Notifier{Secret: key, Now: func() time.Time { return now }}
	require.NoError(t, n.Send(context.Background(), notify.Target{Name: "webhook", URL: url, Bearer: "service-role-key"}, event))

	r := <-got
	id, ts := r.header.Get("webhook-id"), r.header.Get("webhook-timestamp")
	require.Equal(t, "evt_42", id)
	require.Equal(t, strconv.FormatInt(now.Unix(), 10), ts)
	// Verify as a receiver would, from the spec: HMAC-SHA256 over id.ts.body.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(r.body)))
	require.Equal(t, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)), r.header.Get("webhook-signature"))
	require.Equal(t, "Bearer service-role-key", r.header.Get("Authorization"))
	require.Equal(t, "application/json", r.header.Get("Content-Type"))

	var body struct {
		Type      string         `json:"type"`
		Timestamp string         `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(r.body, &body))
	require.Equal(t, "account.reauth_required", body.Type)
	require.Equal(t, "2026-12-03T10:00:00Z", body.Timestamp)
	require.Equal(t, "acme", body.Data["account_id"])
	require.Equal(t, "reauth_required", body.Data["event"])
	require.Equal(t, 42.0, body.Data["sequence"])

	// Without a secret nothing is signed (and no bearer is invented).
	require.NoError(t, (&notify.Notifier{}).Send(context.Background(), notify.Target{Name: "webhook", URL: url}, event))
	r = <-got
	require.Empty(t, r.header.Get("webhook-signature"))
	require.Empty(t, r.header.Get("Authorization"))
}

func TestSendClassifiesFailures(t *testing.T) {
	t.Parallel()
	n := &notify.Notifier{}
	for status, permanent := range map[int]bool{500: false, 429: false, 400: false, 410: true, 302: false} {
		url, _ := receiver(t, status)
		err := n.Send(context.Background(), notify.Target{Name: "webhook", URL: url}, event)
		var ne *notify.Error
		require.True(t, errors.As(err, &ne), "%d: %v", status, err)
		require.Equal(t, status, ne.Status)
		require.Equal(t, permanent, ne.Permanent, "%d", status)
	}

	// No answer: the error names the cause, never the URL (it may hold a token).
	err := n.Send(context.Background(), notify.Target{Name: "webhook", URL: "http://127.0.0.1:1/hook?token=s3cr3t-in-url"}, event)
	var ne *notify.Error
	require.ErrorAs(t, err, &ne)
	require.Zero(t, ne.Status)
	require.False(t, ne.Permanent)
	require.NotContains(t, err.Error(), "s3cr3t-in-url")
	require.Contains(t, err.Error(), "notify webhook")
}

func TestTargets(t *testing.T) {
	t.Parallel()
	var none *notify.Notifier
	_, ok := none.Target("webhook")
	require.False(t, ok)
	n := &notify.Notifier{Targets: []notify.Target{{Name: notify.TargetWebhook, URL: "https://example.com/hook"}}}
	tg, ok := n.Target(notify.TargetWebhook)
	require.True(t, ok)
	require.Equal(t, "https://example.com/hook", tg.URL)
	_, ok = n.Target(notify.TargetEdgeFunction)
	require.False(t, ok)
}

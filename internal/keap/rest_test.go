package keap_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/seal"
)

func TestGetContact(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.fake.Mint()
	tok := seal.Secret(pair.AccessToken)
	id := b.fake.PutContact(map[string]any{"given_name": "Ada"})

	raw, err := b.client.GetContact(ctx, tok, id)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"given_name":"Ada"`)
	require.Equal(t, "Bearer "+pair.AccessToken, "Bearer "+b.fake.Requests()[0].Bearer)

	_, err = b.client.GetContact(ctx, tok, 999999)
	ke, ok := keap.AsError(err)
	require.True(t, ok)
	require.True(t, ke.NotFound())
	require.Equal(t, keap.Permanent, ke.Kind)

	b.fake.ExpireAccess(pair.AccessToken)
	_, err = b.client.GetContact(ctx, tok, id)
	ke, _ = keap.AsError(err)
	require.True(t, ke.Unauthorized())
	require.NotContains(t, err.Error(), pair.AccessToken)

	tok = seal.Secret(b.fake.Mint().AccessToken)
	b.fake.ThrottleNext("/crm/rest", 1, "2", nil)
	_, err = b.client.GetContact(ctx, tok, id)
	ke, _ = keap.AsError(err)
	require.Equal(t, keap.Throttled, ke.Kind)
	require.Equal(t, 2*time.Second, ke.RetryAfter)

	b.fake.FailNext("/crm/rest", 1, 503, []byte(`{"message":"down"}`))
	_, err = b.client.GetContact(ctx, tok, id)
	ke, _ = keap.AsError(err)
	require.Equal(t, keap.Transient, ke.Kind)
	require.Equal(t, "down", ke.Description)

	b.fake.FailNext("/crm/rest", 1, 200, []byte(`not json`))
	_, err = b.client.GetContact(ctx, tok, id)
	ke, _ = keap.AsError(err)
	require.Equal(t, keap.Transient, ke.Kind)
}

func TestHookCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A receiver that echoes the handshake, like keapsync's.
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Hook-Secret", r.Header.Get("X-Hook-Secret"))
	}))
	t.Cleanup(recv.Close)
	tok := seal.Secret(b.fake.Mint().AccessToken)

	keys, err := b.client.EventKeys(ctx, tok)
	require.NoError(t, err)
	require.Contains(t, keys, "contact.add")
	require.NotContains(t, keys, "contact.nonsense")

	h, err := b.client.CreateHook(ctx, tok, "contact.add", recv.URL+"/hook")
	require.NoError(t, err)
	require.Equal(t, "Verified", h.Status)
	require.Equal(t, "contact.add", h.EventKey)

	_, err = b.client.CreateHook(ctx, tok, "contact.nonsense", recv.URL)
	ke, ok := keap.AsError(err)
	require.True(t, ok)
	require.Equal(t, keap.Permanent, ke.Kind)
	require.NotContains(t, err.Error(), recv.URL, "errors never carry the hook URL")

	list, err := b.client.ListHooks(ctx, tok)
	require.NoError(t, err)
	require.Len(t, list, 1)

	b.fake.SetHookStatus(h.Key, "Inactive")
	v, err := b.client.VerifyHook(ctx, tok, h.Key)
	require.NoError(t, err)
	require.Equal(t, "Verified", v.Status)

	require.NoError(t, b.client.DeleteHook(ctx, tok, h.Key))
	require.NoError(t, b.client.DeleteHook(ctx, tok, h.Key), "deleting a deleted hook is fine")
	require.Empty(t, b.fake.Hooks())
}

func TestRateLimitAndThrottleHeaders(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var available atomic.Int64
	available.Store(25)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("x-keap-product-throttle-limit", "25")
		w.Header().Set("x-keap-product-throttle-available", strconv.FormatInt(available.Load(), 10))
		_, _ = w.Write([]byte(`{"id":1}`))
	}))
	t.Cleanup(srv.Close)
	c := keap.New(keap.Options{APIURL: srv.URL, RatePerSecond: 5, RatePerMinute: 6000})

	// 5/s with a burst of 5: ten calls take about a second.
	start := time.Now()
	for range 10 {
		_, err := c.GetContact(ctx, "t", 1)
		require.NoError(t, err)
	}
	require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond)

	// Keap says its per-second budget is nearly spent: the next call waits.
	fast := keap.New(keap.Options{APIURL: srv.URL, RatePerSecond: 1000, RatePerMinute: 60000})
	available.Store(1)
	_, err := fast.GetContact(ctx, "t", 1)
	require.NoError(t, err)
	start = time.Now()
	available.Store(25)
	_, err = fast.GetContact(ctx, "t", 1)
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 800*time.Millisecond, "paused for the next throttle window")

	// Waiting respects cancellation.
	slow := keap.New(keap.Options{APIURL: srv.URL, RatePerSecond: 0.01, RatePerMinute: 1})
	_, err = slow.GetContact(ctx, "t", 1)
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = slow.GetContact(cctx, "t", 1)
	ke, ok := keap.AsError(err)
	require.True(t, ok)
	require.Equal(t, keap.Transient, ke.Kind)
}

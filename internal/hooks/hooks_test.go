package hooks_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/keapfake"
	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/tokens"
)

var ctx = context.Background()

// subscribed serves keapsync with account acme connected and subscribed to
// the default events.
func subscribed(t *testing.T) *keaptest.Harness {
	t.Helper()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	_, err := h.Hooks.Subscribe(ctx, "acme", hooks.DefaultEvents)
	require.NoError(t, err)
	return h
}

func TestSubscribeVerifiesDuringCreate(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	subs, err := h.Hooks.Subscribe(ctx, "acme", hooks.DefaultEvents)
	require.NoError(t, err)
	require.Len(t, subs, 3)
	for _, s := range subs {
		require.Equal(t, keapfake.HookVerified, s.Status, s.EventKey)
	}
	remote := h.Fake.Hooks()
	require.Len(t, remote, 3)
	url, err := h.Hooks.Endpoint(ctx, "acme")
	require.NoError(t, err)
	for _, r := range remote {
		require.Equal(t, url, r.HookURL)
		require.Equal(t, keapfake.HookVerified, r.Status)
	}
	require.True(t, strings.HasPrefix(url, h.APIURL+"/webhooks/keap/acme/"))

	// Subscribing again creates nothing new.
	subs, err = h.Hooks.Subscribe(ctx, "acme", []string{"contact.add"})
	require.NoError(t, err)
	require.Len(t, subs, 3)
	require.Len(t, h.Fake.Hooks(), 3)

	// The secret is stored only hashed and sealed.
	secret := url[strings.LastIndex(url, "/")+1:]
	var n int
	require.NoError(t, h.Pool.QueryRow(ctx, `SELECT count(*) FROM keapsync.hook_endpoints e
		WHERE e::text LIKE '%'||$1||'%'`, secret).Scan(&n))
	require.Zero(t, n)
	ok, err := h.Hooks.VerifySecret(ctx, "acme", secret)
	require.NoError(t, err)
	require.True(t, ok)
	for _, ev := range hooks.DefaultEvents {
		ok, err := h.Hooks.Subscribed(ctx, "acme", ev)
		require.NoError(t, err)
		require.True(t, ok, ev)
	}
	ok, err = h.Hooks.Subscribed(ctx, "acme", "order.add")
	require.NoError(t, err)
	require.False(t, ok)
	for _, tc := range [][2]string{{"acme", secret + "x"}, {"acme", ""}, {"ghost", secret}} {
		ok, err := h.Hooks.VerifySecret(ctx, tc[0], tc[1])
		require.NoError(t, err)
		require.False(t, ok, tc)
	}

	n2, err := h.Hooks.Unsubscribe(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, 3, n2)
	require.Empty(t, h.Fake.Hooks())
	left, err := h.Hooks.List(ctx, "acme")
	require.NoError(t, err)
	require.Empty(t, left)
}

func TestUnverifiedHookIsReported(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	h.Hooks.PublicBaseURL = h.APIURL + "/elsewhere" // the handshake lands on a 404
	subs, err := h.Hooks.Subscribe(ctx, "acme", []string{"contact.add"})
	require.NoError(t, err)
	require.Len(t, subs, 1)
	require.Equal(t, keapfake.HookUnverified, subs[0].Status)
	require.Contains(t, h.Logs.String(), "keap hook not verified")
}

func TestHealthReverifiesInactiveHooks(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	_, err := h.Hooks.Subscribe(ctx, "acme", []string{"contact.add", "contact.edit"})
	require.NoError(t, err)
	remote := h.Fake.Hooks()
	h.Fake.SetHookStatus(remote[0].Key, keapfake.HookInactive)

	n, err := h.Hooks.CheckHealth(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the inactive hook is re-verified")
	for _, r := range h.Fake.Hooks() {
		require.Equal(t, keapfake.HookVerified, r.Status)
	}
	subs, err := h.Hooks.List(ctx, "acme")
	require.NoError(t, err)
	var verified int
	for _, s := range subs {
		require.Equal(t, keapfake.HookVerified, s.Status)
		if s.LastVerifyResult != nil {
			require.Equal(t, "verified", *s.LastVerifyResult)
			verified++
		}
	}
	require.Equal(t, 1, verified, "the outcome is recorded")

	// Nothing to do the second time.
	n, err = h.Hooks.CheckHealth(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestCacheNeverRefusesFreshSubscriptions: one replica verifies the
// handshake (caching the account before any subscription exists) while
// another stores the subscription; the first must accept the deliveries.
func TestCacheNeverRefusesFreshSubscriptions(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	url, err := h.Hooks.Endpoint(ctx, "acme")
	require.NoError(t, err)
	secret := url[strings.LastIndex(url, "/")+1:]
	ok, err := h.Hooks.Subscribed(ctx, "acme", "contact.add")
	require.NoError(t, err)
	require.False(t, ok) // now cached: no subscriptions

	_, _, other := h.NewCoordinator(h.Pool)
	other.Hooks.PublicBaseURL = h.APIURL
	_, err = other.Hooks.Subscribe(ctx, "acme", []string{"contact.add"})
	require.NoError(t, err)
	ok, err = h.Hooks.Subscribed(ctx, "acme", "contact.add")
	require.NoError(t, err)
	require.True(t, ok, "a cached no is checked again")
	ok, err = h.Hooks.VerifySecret(ctx, "acme", secret)
	require.NoError(t, err)
	require.True(t, ok)
}

func TestConcurrentSubscribesMakeNoTwins(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.Hooks.Subscribe(ctx, "acme", hooks.DefaultEvents)
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Len(t, h.Fake.Hooks(), 3, "one hook per event at Keap, however many callers")
}

// TestSubscribeCannotSlipIntoADisconnect: a subscribe from another replica
// arriving after the disconnect removed the hooks at Keap, but before the
// token is gone, waits for the disconnect and then finds no account; it must
// not leave hooks at Keap that nothing could remove.
func TestSubscribeCannotSlipIntoADisconnect(t *testing.T) {
	t.Parallel()
	h := subscribed(t)
	_, _, replica := h.NewCoordinator(pgtest.Pool(t, h.DBURL))

	done := make(chan error, 1)
	err := h.Hooks.Disconnect(ctx, "acme", func() error {
		require.Empty(t, h.Fake.Hooks(), "hooks at Keap go before the token")
		go func() {
			_, err := replica.Hooks.Subscribe(ctx, "acme", hooks.DefaultEvents)
			done <- err
		}()
		select {
		case err := <-done:
			return fmt.Errorf("a subscribe finished inside the disconnect (err=%v)", err)
		case <-time.After(300 * time.Millisecond):
		}
		return h.Tokens.Disconnect(ctx, "acme")
	})
	require.NoError(t, err)
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(<-done))
	require.Empty(t, h.Fake.Hooks())
	var endpoints int
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT count(*) FROM keapsync.hook_endpoints WHERE account_id = 'acme'").Scan(&endpoints))
	require.Zero(t, endpoints)
}

func TestDisconnectRetiresTheReceiver(t *testing.T) {
	t.Parallel()
	h := subscribed(t)
	url, err := h.Hooks.Endpoint(ctx, "acme")
	require.NoError(t, err)
	secret := url[strings.LastIndex(url, "/")+1:]

	req, _ := http.NewRequest("DELETE", h.APIURL+"/oauth/accounts/acme", nil)
	req.Header.Set("Authorization", "Bearer "+keaptest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Empty(t, h.Fake.Hooks(), "hooks are deleted at Keap before the token goes")
	ok, err := h.Hooks.VerifySecret(ctx, "acme", secret)
	require.NoError(t, err)
	require.False(t, ok, "the receiver URL is dead")
	subs, err := h.Hooks.List(ctx, "acme")
	require.NoError(t, err)
	require.Empty(t, subs)
	_, err = h.Hooks.Endpoint(ctx, "acme")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err), "no new secret while disconnected")

	// Reconnected, the account gets a new secret.
	h.Connect("acme")
	url2, err := h.Hooks.Endpoint(ctx, "acme")
	require.NoError(t, err)
	require.NotEqual(t, url, url2)
}

func TestEndpointNeedsAConnectedAccount(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	_, err := h.Hooks.Endpoint(ctx, "ghost")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err))
	_, err = h.Hooks.Subscribe(ctx, "ghost", hooks.DefaultEvents)
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err))
	_, err = h.Hooks.List(ctx, "ghost")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err))
	_, err = h.Hooks.Unsubscribe(ctx, "ghost")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err))
}

// TestDeliveryToTable runs the whole path with River working: a contact
// changes at Keap, Keap delivers, the receiver stores, a job fetches and
// writes public.keap_contacts.
func TestDeliveryToTable(t *testing.T) {
	t.Parallel()
	h := subscribed(t)
	require.NoError(t, h.River.Start(ctx))
	t.Cleanup(func() { _ = h.River.Stop(context.Background()) })

	id := h.Fake.PutContact(map[string]any{"given_name": "Grace", "email_addresses": []any{map[string]any{"email": "g@example.com", "field": "EMAIL1"}}})
	posts, err := h.Fake.Deliver(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, posts)
	waitFor(t, h, id, func(name string, deleted bool) bool { return name == "Grace" && !deleted })

	h.Fake.PutContact(map[string]any{"id": id, "given_name": "Grace H"})
	_, err = h.Fake.Deliver(ctx)
	require.NoError(t, err)
	waitFor(t, h, id, func(name string, deleted bool) bool { return name == "Grace H" && !deleted })

	h.Fake.DeleteContact(id)
	_, err = h.Fake.Deliver(ctx)
	require.NoError(t, err)
	waitFor(t, h, id, func(name string, deleted bool) bool { return deleted })
}

func waitFor(t *testing.T, h *keaptest.Harness, id int64, ok func(string, bool) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		var name string
		var deleted bool
		err := h.Pool.QueryRow(ctx, `SELECT coalesce(given_name, ''), deleted_at IS NOT NULL FROM public.keap_contacts
			WHERE account_id = 'acme' AND keap_id = $1`, id).Scan(&name, &deleted)
		return err == nil && ok(name, deleted)
	}, 15*time.Second, 50*time.Millisecond)
}

package keap_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/keapfake"
	"github.com/keapsync/keapsync/internal/seal"
)

var ctx = context.Background()

type bundle struct {
	fake   *keapfake.Server
	url    string
	client *keap.Client
}

func setup(t *testing.T) bundle {
	t.Helper()
	fake := keapfake.New(keapfake.Options{ClientID: "cid", ClientSecret: "csecret"})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return bundle{fake: fake, url: srv.URL, client: newClient(srv.URL, "csecret", time.Second)}
}

func newClient(url, secret string, timeout time.Duration) *keap.Client {
	return keap.New(keap.Options{
		ClientID: "cid", ClientSecret: seal.Secret(secret), RedirectURI: "http://localhost/cb",
		AuthURL: url + "/app/oauth/authorize", TokenURL: url + "/token", APIURL: url + "/crm/rest", Timeout: timeout,
	})
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/keap/" + name)
	require.NoError(t, err)
	return b
}

func TestExchangeSendsCredentialsInBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code := b.fake.AuthorizeCode("http://localhost/cb")
	tok, err := b.client.Exchange(ctx, code)
	require.NoError(t, err)
	require.Equal(t, "ab123.infusionsoft.com", tok.Tenant())
	require.WithinDuration(t, time.Now().Add(24*time.Hour), tok.ExpiresAt, 5*time.Second)

	reqs := b.fake.TokenRequests("authorization_code")
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, "application/x-www-form-urlencoded", r.ContentType)
	require.False(t, r.HasBasic)
	require.Equal(t, "cid", r.Form.Get("client_id"))
	require.Equal(t, "csecret", r.Form.Get("client_secret"))
	require.Equal(t, "http://localhost/cb", r.Form.Get("redirect_uri"))
	require.Equal(t, keapfake.ClientAuthBody, r.ClientAuth)
}

func TestRefreshIsFormEncodedWithBasicAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.fake.Mint()
	tok, err := b.client.Refresh(ctx, seal.Secret(pair.RefreshToken))
	require.NoError(t, err)
	require.NotEqual(t, pair.RefreshToken, tok.RefreshToken.Reveal(), "keap rotates the refresh token")

	reqs := b.fake.TokenRequests("refresh_token")
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, "application/x-www-form-urlencoded", r.ContentType)
	require.True(t, r.HasBasic)
	require.Equal(t, "cid", r.BasicUser)
	require.Equal(t, "csecret", r.BasicPass)
	require.Empty(t, r.Form.Get("client_secret"), "no credentials in the refresh body")
	require.Equal(t, pair.RefreshToken, r.Form.Get("refresh_token"))

	// The used token is dead at once: a second use is a permanent invalid_grant.
	_, err = b.client.Refresh(ctx, seal.Secret(pair.RefreshToken))
	ke, ok := keap.AsError(err)
	require.True(t, ok)
	require.True(t, ke.InvalidGrant())
	require.Equal(t, keap.Permanent, ke.Kind)
	require.NotContains(t, err.Error(), pair.RefreshToken)
}

func TestClassification(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		status     int
		body       []byte
		retryAfter string
		kind       keap.Kind
		code       string
		ambiguous  bool
		wait       time.Duration
	}{
		{"invalid_grant", 400, fixture(t, "token_error_invalid_grant.json"), "", keap.Permanent, "invalid_grant", false, 0},
		{"misleading invalid_request", 400, fixture(t, "token_error_invalid_request_refresh.json"), "", keap.Permanent, "invalid_request", false, 0},
		{"json body", 400, fixture(t, "token_error_json_body.json"), "", keap.Permanent, "invalid_request", false, 0},
		{"invalid_client 401", 401, []byte(`{"error":"invalid_client","error_description":"Unauthorized"}`), "", keap.Permanent, "invalid_client", false, 0},
		{"bare 401", 401, []byte(`Unauthorized`), "", keap.Permanent, "http_401", false, 0},
		{"500", 500, []byte(`oops`), "", keap.Transient, "", true, 0},
		{"503 json", 503, []byte(`{"message":"down"}`), "", keap.Transient, "", true, 0},
		{"429 new with retry-after", 429, fixture(t, "throttle_429_quota_new.json"), "7", keap.Throttled, "", false, 7 * time.Second},
		{"429 apigee spike no retry-after", 429, fixture(t, "throttle_429_spike_apigee.json"), "", keap.Throttled, "", false, 0},
		{"429 apigee quota", 429, fixture(t, "throttle_429_quota_apigee.json"), "", keap.Throttled, "", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if tc.status == 429 {
				b.fake.ThrottleNext("/token", 1, tc.retryAfter, tc.body)
			} else {
				b.fake.FailNext("/token", 1, tc.status, tc.body)
			}
			_, err := b.client.Refresh(ctx, seal.Secret(b.fake.Mint().RefreshToken))
			ke, ok := keap.AsError(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, tc.kind, ke.Kind, ke.Error())
			require.Equal(t, tc.status, ke.Status)
			if tc.code != "" {
				require.Equal(t, tc.code, ke.Code)
			}
			require.Equal(t, tc.ambiguous, ke.Ambiguous)
			require.Equal(t, tc.wait, ke.RetryAfter)
		})
	}
}

func TestTransportFailures(t *testing.T) {
	t.Parallel()
	t.Run("dropped after processing is ambiguous", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.fake.DropAfterProcessNext(1)
		pair := b.fake.Mint()
		_, err := b.client.Refresh(ctx, seal.Secret(pair.RefreshToken))
		ke, ok := keap.AsError(err)
		require.True(t, ok)
		require.Equal(t, keap.Transient, ke.Kind)
		require.True(t, ke.Ambiguous)
		require.False(t, b.fake.RefreshTokenLive(pair.RefreshToken))
	})
	t.Run("timeout is ambiguous", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.fake.SetLatency(time.Second)
		c := newClient(b.url, "csecret", 100*time.Millisecond)
		_, err := c.Refresh(ctx, seal.Secret(b.fake.Mint().RefreshToken))
		ke, ok := keap.AsError(err)
		require.True(t, ok)
		require.Equal(t, keap.Transient, ke.Kind)
		require.True(t, ke.Ambiguous)
	})
	t.Run("connection refused is not", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		ln.Close()
		_, err = newClient("http://"+addr, "x", time.Second).Refresh(ctx, "rt")
		ke, ok := keap.AsError(err)
		require.True(t, ok)
		require.Equal(t, keap.Transient, ke.Kind)
		require.False(t, ke.Ambiguous, "nothing was sent")
	})
}

func TestWrongCredentialsAreNotInvalidGrant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := newClient(b.url, "wrong-secret", time.Second)
	_, err := c.Refresh(ctx, seal.Secret(b.fake.Mint().RefreshToken))
	ke, ok := keap.AsError(err)
	require.True(t, ok)
	require.Equal(t, keap.Permanent, ke.Kind)
	require.False(t, ke.InvalidGrant(), "a credentials problem must not kill the account")
	require.NotContains(t, err.Error(), "wrong-secret")
}

func TestAuthCodeURLAndHelpers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := b.client.AuthCodeURL("st4te")
	require.Contains(t, u, b.url+"/app/oauth/authorize?")
	for _, p := range []string{"client_id=cid", "response_type=code", "scope=full", "state=st4te", "redirect_uri=http%3A%2F%2Flocalhost%2Fcb"} {
		require.Contains(t, u, p)
	}
	require.Equal(t, "ab123.infusionsoft.com", keap.TenantFromScope("full|ab123.infusionsoft.com"))
	require.Equal(t, "", keap.TenantFromScope("full"))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, 30*time.Second, keap.ParseRetryAfter("30", now))
	require.Equal(t, time.Minute, keap.ParseRetryAfter(now.Add(time.Minute).Format(http.TimeFormat), now))
	require.Zero(t, keap.ParseRetryAfter("soon", now))
	require.Zero(t, keap.ParseRetryAfter("", now))
	require.Equal(t, "transient", keap.Transient.String())
	require.Equal(t, "unknown", keap.Kind(0).String())
}

func TestMissingRefreshTokenInResponse(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"a","token_type":"bearer","expires_in":86399}`))
	}))
	t.Cleanup(srv.Close)
	// x/oauth2 keeps the old refresh token when the answer omits one; that is
	// right (the old one was not rotated) and our Token carries it.
	tok, err := newClient(srv.URL, "s", time.Second).Refresh(ctx, "old-rt")
	require.NoError(t, err)
	require.Equal(t, "old-rt", tok.RefreshToken.Reveal())
}

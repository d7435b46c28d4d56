package keapfake

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const fixtureDir = "../../testdata/keap"

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	require.NoError(t, err)
	return b
}

// clock is an injectable clock that moves only when told to.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type testBundle struct {
	srv    *Server
	ts     *httptest.Server
	clock  *clock
	client *http.Client
}

func setup(t *testing.T, opts ...func(*Options)) *testBundle {
	t.Helper()
	c := &clock{now: time.Date(2026, 3, 29, 10, 55, 37, 0, time.UTC)}
	o := Options{Now: c.Now}
	for _, f := range opts {
		f(&o)
	}
	srv := New(o)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	client := &http.Client{
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return &testBundle{srv: srv, ts: ts, clock: c, client: client}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (b *testBundle) do(t *testing.T, method, path string, header http.Header, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, b.ts.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: rb}
}

func (b *testBundle) rest(t *testing.T, method, path, access, body string) response {
	t.Helper()
	h := http.Header{}
	if access != "" {
		h.Set("Authorization", "Bearer "+access)
	}
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	return b.do(t, method, "/crm/rest"+path, h, body)
}

func (b *testBundle) token(t *testing.T, form url.Values, basic bool) response {
	t.Helper()
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	if basic {
		req := &http.Request{Header: http.Header{}}
		req.SetBasicAuth(b.srv.opts.ClientID, b.srv.opts.ClientSecret)
		h.Set("Authorization", req.Header.Get("Authorization"))
	}
	return b.do(t, http.MethodPost, "/token", h, form.Encode())
}

func (b *testBundle) refresh(t *testing.T, rt string) response {
	t.Helper()
	return b.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, true)
}

func tokenPair(t *testing.T, r response) TokenPair {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var tr tokenResponse
	require.NoError(t, json.Unmarshal(r.body, &tr))
	require.Equal(t, "bearer", tr.TokenType)
	return TokenPair{AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken, ExpiresIn: tr.ExpiresIn, Scope: tr.Scope}
}

func requireBody(t *testing.T, want []byte, r response) {
	t.Helper()
	require.JSONEq(t, string(want), string(r.body))
}

// receiver is a hook endpoint that records what Keap sends it.
type receiver struct {
	ts *httptest.Server

	mu         sync.Mutex
	handshakes []http.Header
	deliveries []deliveryBody
	raw        [][]byte

	echo   atomic.Bool
	status atomic.Int32 // answer to deliveries; 0 = 200
	onPost func(r *http.Request)
}

func newReceiver(t *testing.T, echo bool) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.echo.Store(echo)
	rc.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if rc.onPost != nil {
			rc.onPost(r)
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if secret := r.Header.Get("X-Hook-Secret"); secret != "" {
			rc.handshakes = append(rc.handshakes, r.Header.Clone())
			if rc.echo.Load() {
				w.Header().Set("X-Hook-Secret", secret)
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		rc.raw = append(rc.raw, body)
		var d deliveryBody
		if err := json.Unmarshal(body, &d); err == nil {
			rc.deliveries = append(rc.deliveries, d)
		}
		if st := rc.status.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.ts.Close)
	return rc
}

func (rc *receiver) lastSecret() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.handshakes[len(rc.handshakes)-1].Get("X-Hook-Secret")
}

func (rc *receiver) handshakeCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.handshakes)
}

func (rc *receiver) rawBodies() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.raw...)
}

func (rc *receiver) got() []deliveryBody {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]deliveryBody(nil), rc.deliveries...)
}

func (b *testBundle) createHook(t *testing.T, access, eventKey, hookURL string) Hook {
	t.Helper()
	r := b.rest(t, http.MethodPost, "/v1/hooks", access, fmt.Sprintf(`{"eventKey":%q,"hookUrl":%q}`, eventKey, hookURL))
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	var h Hook
	require.NoError(t, json.Unmarshal(r.body, &h))
	return h
}

func TestFixtureConstantsMatchFiles(t *testing.T) {
	t.Parallel()
	for file, body := range map[string]string{
		"token_error_json_body.json":               TokenErrorJSONBody,
		"token_error_invalid_grant.json":           TokenErrorInvalidGrant,
		"token_error_invalid_request_refresh.json": TokenErrorInvalidRequestRefresh,
		"throttle_429_quota_new.json":              Throttle429QuotaNew,
		"throttle_429_quota_apigee.json":           Throttle429QuotaApigee,
		"throttle_429_spike_apigee.json":           Throttle429SpikeApigee,
	} {
		require.JSONEq(t, string(fixture(t, file)), body, file)
		require.Equal(t, strings.TrimSpace(string(fixture(t, file))), body, file)
	}
}

func TestTokenRejectsNonFormBodies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := fixture(t, "token_error_json_body.json")
	rt := b.srv.Mint().RefreshToken

	for _, tc := range []struct{ contentType, body string }{
		{"application/json", `{"grant_type":"refresh_token","refresh_token":"` + rt + `"}`},
		{"text/plain", "grant_type=refresh_token&refresh_token=" + rt},
		{"", "grant_type=refresh_token&refresh_token=" + rt},
		{"application/x-www-form-urlencoded", "refresh_token=" + rt}, // no grant_type
	} {
		h := http.Header{"Authorization": {"Basic " + basic("fake-client-id", "fake-client-secret")}}
		if tc.contentType != "" {
			h.Set("Content-Type", tc.contentType)
		}
		r := b.do(t, http.MethodPost, "/token", h, tc.body)
		require.Equal(t, http.StatusBadRequest, r.status, tc.contentType)
		require.Equal(t, strings.TrimSpace(string(want)), string(r.body))
		requireBody(t, want, r)
	}
	require.True(t, b.srv.RefreshTokenLive(rt), "a rejected request must not use the token")

	r := b.token(t, url.Values{"grant_type": {"password"}}, true)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "unsupported_grant_type", r.json(t)["error"])

	r = b.do(t, http.MethodGet, "/token", nil, "")
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
}

func basic(user, pass string) string {
	req := &http.Request{Header: http.Header{}}
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func authorizeURL(q url.Values) string { return "/app/oauth/authorize?" + q.Encode() }

func TestAuthorizeRedirectsWithCodeStateAndScope(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := url.Values{
		"client_id":     {"fake-client-id"},
		"redirect_uri":  {"https://sync.example.com/oauth/callback?x=1"},
		"response_type": {"code"},
		"scope":         {"full"},
		"state":         {"st+a/te=="},
	}
	r := b.do(t, http.MethodGet, authorizeURL(q), nil, "")
	require.Equal(t, http.StatusFound, r.status)
	loc, err := url.Parse(r.header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, "sync.example.com", loc.Host)
	require.Equal(t, "/oauth/callback", loc.Path)
	got := loc.Query()
	require.Equal(t, "1", got.Get("x"), "existing query kept")
	require.Equal(t, "st+a/te==", got.Get("state"))
	require.Equal(t, "full|ab123.infusionsoft.com", got.Get("scope"))
	code := got.Get("code")
	require.NotEmpty(t, code)

	// The code exchanges once, for the redirect_uri it was issued for.
	form := url.Values{
		"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {"https://sync.example.com/oauth/callback?x=1"},
		"client_id":    {"fake-client-id"}, "client_secret": {"fake-client-secret"},
	}
	p := tokenPair(t, b.token(t, form, false))
	require.Equal(t, "full|ab123.infusionsoft.com", p.Scope)
}

func TestAuthorizeErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *Options) { o.RedirectURIs = []string{"https://sync.example.com/cb"} })
	base := url.Values{
		"client_id": {"fake-client-id"}, "redirect_uri": {"https://sync.example.com/cb"},
		"response_type": {"code"}, "scope": {"full"}, "state": {"s1"},
	}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range base {
			q[kk] = vv
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}

	r := b.do(t, http.MethodGet, authorizeURL(with("client_id", "nope")), nil, "")
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "invalid_client", r.json(t)["error"])

	r = b.do(t, http.MethodGet, authorizeURL(with("redirect_uri", "")), nil, "")
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "invalid_request", r.json(t)["error"])

	r = b.do(t, http.MethodGet, authorizeURL(with("redirect_uri", "https://evil.example.com/cb")), nil, "")
	require.Equal(t, http.StatusBadRequest, r.status)

	redirectErr := func(q url.Values) url.Values {
		t.Helper()
		r := b.do(t, http.MethodGet, authorizeURL(q), nil, "")
		require.Equal(t, http.StatusFound, r.status)
		loc, err := url.Parse(r.header.Get("Location"))
		require.NoError(t, err)
		require.Empty(t, loc.Query().Get("code"))
		require.Equal(t, "s1", loc.Query().Get("state"))
		return loc.Query()
	}
	require.Equal(t, "unsupported_response_type", redirectErr(with("response_type", "token")).Get("error"))
	require.Equal(t, "invalid_scope", redirectErr(with("scope", "contacts")).Get("error"))

	b.srv.SetDenyAuthorize(true)
	got := redirectErr(base)
	require.Equal(t, "access_denied", got.Get("error"))
	require.NotEmpty(t, got.Get("error_description"))

	b.srv.SetDenyAuthorize(false)
	r = b.do(t, http.MethodGet, authorizeURL(base), nil, "")
	require.Equal(t, http.StatusFound, r.status)
	require.Contains(t, r.header.Get("Location"), "code=")
}

func TestCodeExchange(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const cb = "https://sync.example.com/cb"
	exchange := func(code, redirect string, basicCreds bool, secret string) response {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
		h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		if basicCreds {
			h.Set("Authorization", "Basic "+basic("fake-client-id", secret))
		} else {
			form.Set("client_id", "fake-client-id")
			form.Set("client_secret", secret)
		}
		return b.do(t, http.MethodPost, "/token", h, form.Encode())
	}

	t.Run("body credentials, single use", func(t *testing.T) {
		code := b.srv.AuthorizeCode(cb)
		p := tokenPair(t, exchange(code, cb, false, "fake-client-secret"))
		require.Equal(t, 86399, p.ExpiresIn)
		require.Equal(t, "full|ab123.infusionsoft.com", p.Scope)
		require.NotEqual(t, p.AccessToken, p.RefreshToken)
		require.True(t, b.srv.RefreshTokenLive(p.RefreshToken))
		require.True(t, b.srv.AccessTokenLive(p.AccessToken))

		r := exchange(code, cb, false, "fake-client-secret")
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Equal(t, "invalid_grant", r.json(t)["error"])
	})

	t.Run("basic credentials", func(t *testing.T) {
		tokenPair(t, exchange(b.srv.AuthorizeCode(cb), cb, true, "fake-client-secret"))
	})

	t.Run("redirect_uri mismatch", func(t *testing.T) {
		code := b.srv.AuthorizeCode(cb)
		r := exchange(code, cb+"/other", false, "fake-client-secret")
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Equal(t, "invalid_grant", r.json(t)["error"])
		tokenPair(t, exchange(code, cb, false, "fake-client-secret")) // a mismatch does not burn the code
	})

	t.Run("wrong client secret", func(t *testing.T) {
		code := b.srv.AuthorizeCode(cb)
		for _, basicCreds := range []bool{false, true} {
			r := exchange(code, cb, basicCreds, "wrong")
			require.Equal(t, http.StatusUnauthorized, r.status)
			require.Equal(t, map[string]any{"error": "invalid_client", "error_description": "Unauthorized"}, r.json(t))
		}
	})

	t.Run("unknown and expired codes", func(t *testing.T) {
		r := exchange("no-such-code", cb, false, "fake-client-secret")
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Equal(t, "invalid_grant", r.json(t)["error"])

		// Only this subtest moves the clock, after the others have finished.
		code := b.srv.AuthorizeCode(cb)
		b.clock.Advance(10*time.Minute + time.Second)
		r = exchange(code, cb, false, "fake-client-secret")
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Equal(t, "invalid_grant", r.json(t)["error"])
	})

	var auths []string
	for _, req := range b.srv.TokenRequests("authorization_code") {
		auths = append(auths, req.ClientAuth)
	}
	require.Contains(t, auths, ClientAuthBody)
	require.Contains(t, auths, ClientAuthBasic)
}

func TestRefreshStrictRotation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.srv.Mint()

	second := tokenPair(t, b.refresh(t, first.RefreshToken))
	require.NotEqual(t, first.RefreshToken, second.RefreshToken)
	require.NotEqual(t, first.AccessToken, second.AccessToken)
	require.Equal(t, "full|ab123.infusionsoft.com", second.Scope)
	require.False(t, b.srv.RefreshTokenLive(first.RefreshToken))
	require.True(t, b.srv.RefreshTokenLive(second.RefreshToken))

	// The used refresh token is dead at once: no grace window.
	r := b.refresh(t, first.RefreshToken)
	require.Equal(t, http.StatusBadRequest, r.status)
	requireBody(t, fixture(t, "token_error_invalid_grant.json"), r)

	// The old access token lives until its own expiry.
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", first.AccessToken, "").status)

	// Body credentials are accepted too, and the log says where they were.
	third := tokenPair(t, b.token(t, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {second.RefreshToken},
		"client_id": {"fake-client-id"}, "client_secret": {"fake-client-secret"},
	}, false))
	reqs := b.srv.TokenRequests("refresh_token")
	require.Len(t, reqs, 3)
	require.Equal(t, ClientAuthBasic, reqs[0].ClientAuth)
	require.True(t, reqs[0].HasBasic)
	require.Equal(t, ClientAuthBody, reqs[2].ClientAuth)
	require.False(t, reqs[2].HasBasic)

	// Wrong client credentials: Keap's misleading invalid_request, and the token survives.
	h := http.Header{
		"Content-Type":  {"application/x-www-form-urlencoded"},
		"Authorization": {"Basic " + basic("fake-client-id", "wrong")},
	}
	r = b.do(t, http.MethodPost, "/token", h, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {third.RefreshToken}}.Encode())
	require.Equal(t, http.StatusBadRequest, r.status)
	requireBody(t, fixture(t, "token_error_invalid_request_refresh.json"), r)
	r = b.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {third.RefreshToken}}, false)
	require.Equal(t, http.StatusBadRequest, r.status, "no credentials at all")
	requireBody(t, fixture(t, "token_error_invalid_request_refresh.json"), r)
	require.True(t, b.srv.RefreshTokenLive(third.RefreshToken))

	// Unknown and empty refresh tokens.
	for _, rt := range []string{"nope", ""} {
		r = b.refresh(t, rt)
		require.Equal(t, http.StatusBadRequest, r.status)
		requireBody(t, fixture(t, "token_error_invalid_grant.json"), r)
	}
}

func TestTokensAreUnique(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seen := map[string]bool{}
	p := b.srv.Mint()
	for range 20 {
		require.False(t, seen[p.AccessToken] || seen[p.RefreshToken])
		seen[p.AccessToken], seen[p.RefreshToken] = true, true
		require.Len(t, p.AccessToken, 32)
		p = tokenPair(t, b.refresh(t, p.RefreshToken))
	}
}

func TestExpiryFollowsTheClock(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *Options) {
		o.AccessTTL = time.Hour
		o.RefreshTTL = 48 * time.Hour
	})
	p := b.srv.Mint()
	require.Equal(t, 3599, p.ExpiresIn)
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)

	b.clock.Advance(time.Hour)
	require.Equal(t, http.StatusUnauthorized, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)
	require.True(t, b.srv.RefreshTokenLive(p.RefreshToken))

	b.clock.Advance(47 * time.Hour)
	require.False(t, b.srv.RefreshTokenLive(p.RefreshToken))
	r := b.refresh(t, p.RefreshToken)
	require.Equal(t, http.StatusBadRequest, r.status)
	requireBody(t, fixture(t, "token_error_invalid_grant.json"), r)
}

func TestDefaultLifetimes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.clock.Advance(24*time.Hour - time.Second)
	require.True(t, b.srv.AccessTokenLive(p.AccessToken))
	b.clock.Advance(time.Second)
	require.False(t, b.srv.AccessTokenLive(p.AccessToken))

	b.clock.Advance(45*24*time.Hour - 24*time.Hour - time.Second)
	require.True(t, b.srv.RefreshTokenLive(p.RefreshToken))
	b.clock.Advance(time.Second)
	require.False(t, b.srv.RefreshTokenLive(p.RefreshToken))
}

func TestRESTRequiresLiveBearer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	id := b.srv.PutContact(map[string]any{"given_name": "Ada"})
	path := "/v1/contacts/" + strconv.FormatInt(id, 10)

	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, path, p.AccessToken, "").status)
	for name, h := range map[string]http.Header{
		"missing":      {},
		"unknown":      {"Authorization": {"Bearer nope"}},
		"wrong scheme": {"Authorization": {"Basic " + basic("a", "b")}},
	} {
		r := b.do(t, http.MethodGet, "/crm/rest"+path, h, "")
		require.Equal(t, http.StatusUnauthorized, r.status, name)
		require.Equal(t, map[string]any{"message": "Unauthorized"}, r.json(t), name)
		require.NotEmpty(t, r.header.Get("X-Keap-Product-Quota-Limit"), name)
		require.Empty(t, r.header.Get("X-Keap-Tenant-Id"), name)
	}

	b.srv.ExpireAccess(p.AccessToken)
	r := b.rest(t, http.MethodGet, path, p.AccessToken, "")
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Equal(t, "ab123", r.header.Get("X-Keap-Tenant-Id"), "an expired token still names its tenant")
	require.Equal(t, http.StatusUnauthorized, b.rest(t, http.MethodGet, "/v1/nothing", p.AccessToken, "").status)

	q := b.srv.Mint()
	r = b.rest(t, http.MethodGet, "/v1/nothing", q.AccessToken, "")
	require.Equal(t, http.StatusNotFound, r.status)
	require.NotEmpty(t, r.json(t)["message"])
	require.Equal(t, http.StatusNotFound, b.do(t, http.MethodGet, "/elsewhere", nil, "").status)
}

var keapTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$`)

func TestContacts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()

	var seed map[string]any
	require.NoError(t, json.Unmarshal(fixture(t, "contact_v1.json"), &seed))
	id := b.srv.PutContact(seed)
	require.EqualValues(t, 2041, id)

	r := b.rest(t, http.MethodGet, "/v1/contacts/2041", p.AccessToken, "")
	require.Equal(t, http.StatusOK, r.status)
	got := r.json(t)
	for k := range seed {
		require.Contains(t, got, k)
	}
	require.EqualValues(t, 2041, got["id"])
	require.Equal(t, "Ada", got["given_name"])
	require.Equal(t, seed["email_addresses"], got["email_addresses"])
	require.Regexp(t, keapTime, got["last_updated"])
	require.Equal(t, "2026-03-29T10:55:37.000+0000", got["date_created"])
	require.Equal(t, got["date_created"], got["last_updated"])

	// The clock stands still, but last_updated still moves forward, and fields merge.
	id = b.srv.PutContact(map[string]any{"id": int64(2041), "given_name": "Ada B.", "company": nil})
	require.EqualValues(t, 2041, id)
	c, ok := b.srv.Contact(2041)
	require.True(t, ok)
	require.Equal(t, "Ada B.", c["given_name"])
	require.Equal(t, "Example", c["family_name"])
	require.NotContains(t, c, "company")
	require.Equal(t, int64(2041), c["id"])
	require.Equal(t, "2026-03-29T10:55:37.001+0000", c["last_updated"])
	require.Equal(t, "2026-03-29T10:55:37.000+0000", c["date_created"])

	// Callers cannot change the stored contact through what they passed or got.
	emails := c["email_addresses"].([]any)
	emails[0] = "mutated"
	c2, _ := b.srv.Contact(2041)
	require.NotEqual(t, "mutated", c2["email_addresses"].([]any)[0])

	// New ids continue after the highest seen.
	next := b.srv.PutContact(map[string]any{"given_name": "Grace"})
	require.EqualValues(t, 2042, next)
	c3, _ := b.srv.Contact(next)
	require.Equal(t, []any{}, c3["email_addresses"])
	require.EqualValues(t, 2043, b.srv.PutContact(map[string]any{"id": "0"}))
	require.EqualValues(t, 3000, b.srv.PutContact(map[string]any{"id": 3000.0}))

	b.srv.DeleteContact(2041)
	b.srv.DeleteContact(2041) // again: no-op
	b.srv.DeleteContact(99999)
	_, ok = b.srv.Contact(2041)
	require.False(t, ok)
	r = b.rest(t, http.MethodGet, "/v1/contacts/2041", p.AccessToken, "")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Contains(t, r.json(t)["message"], "2041")
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodGet, "/v1/contacts/5", p.AccessToken, "").status)
	require.Equal(t, http.StatusBadRequest, b.rest(t, http.MethodGet, "/v1/contacts/abc", p.AccessToken, "").status)

	// Re-creating a deleted id is an add with a new date_created.
	b.clock.Advance(time.Hour)
	b.srv.PutContact(map[string]any{"id": 2041, "given_name": "Ada again"})
	c, ok = b.srv.Contact(2041)
	require.True(t, ok)
	require.Equal(t, "2026-03-29T11:55:37.000+0000", c["date_created"])
	require.NotContains(t, c, "family_name")

	require.Panics(t, func() { b.srv.PutContact(map[string]any{"bad": make(chan int)}) })
}

func TestQuotaHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()

	r := b.rest(t, http.MethodGet, "/v1/hooks/event_keys", p.AccessToken, "")
	require.Equal(t, http.StatusOK, r.status)
	for _, h := range []string{
		"x-keap-product-quota-limit", "x-keap-product-quota-time-unit", "x-keap-product-quota-interval",
		"x-keap-product-quota-available", "x-keap-product-quota-used", "x-keap-product-quota-expiry-time",
		"x-keap-product-throttle-limit", "x-keap-product-throttle-time-unit", "x-keap-product-throttle-interval",
		"x-keap-product-throttle-available", "x-keap-product-throttle-used",
		"x-keap-tenant-id", "x-keap-tenant-throttle-limit", "x-keap-tenant-throttle-time-unit",
		"x-keap-tenant-throttle-interval", "x-keap-tenant-throttle-available", "x-keap-tenant-throttle-used",
	} {
		require.NotEmpty(t, r.header.Get(h), h)
	}
	require.Equal(t, "ab123", r.header.Get("x-keap-tenant-id"))
	require.Equal(t, "150000", r.header.Get("x-keap-product-quota-limit"))
	require.Equal(t, "1", r.header.Get("x-keap-product-quota-used"))
	require.Equal(t, "149999", r.header.Get("x-keap-product-quota-available"))
	require.Equal(t, strconv.FormatInt(time.Date(2026, 3, 30, 0, 0, 0, 0, time.UTC).UnixMilli(), 10),
		r.header.Get("x-keap-product-quota-expiry-time"))
	require.Equal(t, "25", r.header.Get("x-keap-product-throttle-limit"))
	require.Equal(t, "24", r.header.Get("x-keap-product-throttle-available"))
	require.Equal(t, "1", r.header.Get("x-keap-tenant-throttle-used"))

	var keys []string
	require.NoError(t, json.Unmarshal(r.body, &keys))
	require.Contains(t, keys, "contact.add")
	require.Contains(t, keys, "contact.redact")
	require.Contains(t, keys, "invoice.payment.edit")
	require.Contains(t, keys, "opportunity.stage_move")

	// The token endpoint counts against the same quota; it has no tenant headers.
	r = b.refresh(t, p.RefreshToken)
	require.Equal(t, "2", r.header.Get("x-keap-product-quota-used"))
	require.Empty(t, r.header.Get("x-keap-tenant-id"))

	// The windows roll with the clock.
	b.clock.Advance(time.Minute)
	r = b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.Equal(t, "1", r.header.Get("x-keap-product-throttle-used"))
	require.Equal(t, "1", r.header.Get("x-keap-tenant-throttle-used"))
	require.Equal(t, "3", r.header.Get("x-keap-product-quota-used"))
	b.clock.Advance(24 * time.Hour)
	r = b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.Equal(t, "1", r.header.Get("x-keap-product-quota-used"))

	// The authorize endpoint is not behind the API gateway.
	r = b.do(t, http.MethodGet, "/app/oauth/authorize", nil, "")
	require.Empty(t, r.header.Get("x-keap-product-quota-limit"))
}

func TestHookCreateWithEchoingReceiverIsVerified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.srv.PutContact(map[string]any{"id": 7, "given_name": "Ada"})
	rc := newReceiver(t, true)

	// The receiver calls back into the fake during the handshake, as a real service might.
	var during atomic.Value
	rc.onPost = func(r *http.Request) {
		if r.Header.Get("X-Hook-Secret") == "" {
			return
		}
		during.Store(b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").body)
		_, _ = b.srv.Contact(7)
	}

	h := b.createHook(t, p.AccessToken, "contact.add", rc.ts.URL+"/webhooks/keap/acme/s3cr3t")
	require.Equal(t, Hook{Key: "1", EventKey: "contact.add", HookURL: rc.ts.URL + "/webhooks/keap/acme/s3cr3t", Status: HookVerified}, h)
	require.Equal(t, []Hook{h}, b.srv.Hooks())

	var seen []Hook
	require.NoError(t, json.Unmarshal(during.Load().([]byte), &seen))
	require.Equal(t, HookUnverified, seen[0].Status, "Unverified while the handshake runs")

	require.Equal(t, 1, rc.handshakeCount())
	require.Len(t, rc.lastSecret(), 32)

	r := b.rest(t, http.MethodGet, "/v1/hooks/1", p.AccessToken, "")
	require.Equal(t, http.StatusOK, r.status)
	var fixtureShape map[string]any
	require.NoError(t, json.Unmarshal(fixture(t, "hook_subscription.json"), &fixtureShape))
	for k := range fixtureShape {
		require.Contains(t, r.json(t), k)
	}
	require.Equal(t, "2", b.createHook(t, p.AccessToken, "contact.edit", rc.ts.URL).Key)
}

func TestHookCreateWithSilentReceiverStaysUnverified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	rc := newReceiver(t, false)

	h := b.createHook(t, p.AccessToken, "contact.edit", rc.ts.URL)
	require.Equal(t, HookUnverified, h.Status)

	// Receiver answering non-2xx even with the echo, and one that is unreachable.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Hook-Secret", r.Header.Get("X-Hook-Secret"))
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(bad.Close)
	require.Equal(t, HookUnverified, b.createHook(t, p.AccessToken, "contact.add", bad.URL).Status)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	require.Equal(t, HookUnverified, b.createHook(t, p.AccessToken, "contact.add", dead.URL).Status)

	// delayedVerify completes it with the last secret sent, and only with that.
	delayed := func(secret string) response {
		h := http.Header{"Authorization": {"Bearer " + p.AccessToken}}
		if secret != "" {
			h.Set("X-Hook-Secret", secret)
		}
		return b.do(t, http.MethodPost, "/crm/rest/v1/hooks/1/delayedVerify", h, "")
	}
	require.Equal(t, http.StatusBadRequest, delayed("wrong").status)
	require.Equal(t, http.StatusBadRequest, delayed("").status)
	require.Equal(t, HookUnverified, b.srv.Hooks()[0].Status)
	r := delayed(rc.lastSecret())
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, HookVerified, r.json(t)["status"])
	require.Equal(t, HookVerified, b.srv.Hooks()[0].Status)
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodPost, "/v1/hooks/99/delayedVerify", p.AccessToken, "").status)
}

func TestHookValidationAndCRUD(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	rc := newReceiver(t, true)

	for _, body := range []string{
		`{"eventKey":"contact.explode","hookUrl":"` + rc.ts.URL + `"}`,
		`{"eventKey":"contact.add"}`,
		`{"eventKey":"contact.add","hookUrl":"ftp://x"}`,
		`{"eventKey":"contact.add","hookUrl":"not a url"}`,
		`not json`,
	} {
		r := b.rest(t, http.MethodPost, "/v1/hooks", p.AccessToken, body)
		require.Equal(t, http.StatusBadRequest, r.status, body)
		require.NotEmpty(t, r.json(t)["message"])
	}
	require.Empty(t, b.srv.Hooks())

	r := b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.Equal(t, "[]", string(r.body))

	for i := range 11 {
		h := b.createHook(t, p.AccessToken, "contact.add", rc.ts.URL)
		require.Equal(t, strconv.Itoa(i+1), h.Key)
	}
	var list []Hook
	r = b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.NoError(t, json.Unmarshal(r.body, &list))
	require.Len(t, list, 11)
	require.Equal(t, "2", list[1].Key)
	require.Equal(t, "10", list[9].Key, "numeric order")

	// PUT the event key: status kept, no handshake.
	before := rc.handshakeCount()
	r = b.rest(t, http.MethodPut, "/v1/hooks/1", p.AccessToken, `{"eventKey":"contact.delete"}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "contact.delete", r.json(t)["eventKey"])
	require.Equal(t, HookVerified, r.json(t)["status"])
	require.Equal(t, before, rc.handshakeCount())

	// PUT a new URL: handshake again, against the new URL.
	silent := newReceiver(t, false)
	r = b.rest(t, http.MethodPut, "/v1/hooks/1", p.AccessToken, `{"hookUrl":"`+silent.ts.URL+`"}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, HookUnverified, r.json(t)["status"])
	require.Equal(t, 1, silent.handshakeCount())

	require.Equal(t, http.StatusBadRequest, b.rest(t, http.MethodPut, "/v1/hooks/1", p.AccessToken, `{"eventKey":"nope"}`).status)
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodPut, "/v1/hooks/99", p.AccessToken, `{}`).status)
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodGet, "/v1/hooks/99", p.AccessToken, "").status)

	r = b.rest(t, http.MethodDelete, "/v1/hooks/2", p.AccessToken, "")
	require.Equal(t, http.StatusNoContent, r.status)
	require.Empty(t, r.body)
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodDelete, "/v1/hooks/2", p.AccessToken, "").status)
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodGet, "/v1/hooks/2", p.AccessToken, "").status)
	require.Len(t, b.srv.Hooks(), 10)
}

func TestVerifyRedoesHandshake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	rc := newReceiver(t, true)
	h := b.createHook(t, p.AccessToken, "contact.add", rc.ts.URL)
	first := rc.lastSecret()

	b.srv.SetHookStatus(h.Key, HookInactive)
	require.Equal(t, HookInactive, b.srv.Hooks()[0].Status)

	r := b.rest(t, http.MethodPost, "/v1/hooks/1/verify", p.AccessToken, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, HookVerified, r.json(t)["status"])
	require.Equal(t, 2, rc.handshakeCount())
	require.NotEqual(t, first, rc.lastSecret(), "a fresh secret per handshake")

	rc.echo.Store(false)
	r = b.rest(t, http.MethodPost, "/v1/hooks/1/verify", p.AccessToken, "")
	require.Equal(t, HookUnverified, r.json(t)["status"])
	require.Equal(t, http.StatusNotFound, b.rest(t, http.MethodPost, "/v1/hooks/9/verify", p.AccessToken, "").status)
}

func TestDeliverBatchesByEventKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	adds := newReceiver(t, true)
	edits := newReceiver(t, true)
	unverified := newReceiver(t, false)
	b.createHook(t, p.AccessToken, "contact.add", adds.ts.URL)
	b.createHook(t, p.AccessToken, "contact.edit", edits.ts.URL)
	b.createHook(t, p.AccessToken, "contact.add", unverified.ts.URL)

	for range 1001 {
		b.srv.PutContact(map[string]any{"given_name": "x"})
	}
	b.srv.PutContact(map[string]any{"id": 5, "given_name": "edited"})
	require.Equal(t, 1002, b.srv.PendingDeliveries())

	n, err := b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Zero(t, b.srv.PendingDeliveries())

	got := adds.got()
	require.Len(t, got, 2)
	require.Len(t, got[0].ObjectKeys, 1000)
	require.Len(t, got[1].ObjectKeys, 1)
	require.Equal(t, "contact.add", got[0].EventKey)
	require.Equal(t, "contact", got[0].ObjectType)
	require.EqualValues(t, 1, got[0].ObjectKeys[0].ID)
	require.EqualValues(t, 1001, got[1].ObjectKeys[0].ID)
	_, err = time.Parse(time.RFC3339, got[0].ObjectKeys[0].Timestamp)
	require.NoError(t, err)

	// The wire shape matches the fixture's keys.
	var wire, want map[string]any
	require.NoError(t, json.Unmarshal(adds.rawBodies()[1], &wire))
	require.NoError(t, json.Unmarshal(fixture(t, "hook_delivery_contact_add.json"), &want))
	for k := range want {
		require.Contains(t, wire, k)
	}
	objKey := wire["object_keys"].([]any)[0].(map[string]any)
	for k := range want["object_keys"].([]any)[0].(map[string]any) {
		require.Contains(t, objKey, k)
	}

	require.Len(t, edits.got(), 1)
	require.EqualValues(t, 5, edits.got()[0].ObjectKeys[0].ID)
	require.Empty(t, unverified.got())

	// Nothing queued, nothing sent.
	n, err = b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestDeliverOnlyChangesAfterVerification(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	rc := newReceiver(t, true)

	b.srv.PutContact(map[string]any{"id": 1}) // before any hook: lost, as at Keap
	h := b.createHook(t, p.AccessToken, "contact.delete", rc.ts.URL)
	b.srv.DeleteContact(1)
	b.srv.SetHookStatus(h.Key, HookInactive)
	b.srv.PutContact(map[string]any{"id": 2})
	b.srv.DeleteContact(2) // while Inactive: lost
	require.Zero(t, b.srv.PendingDeliveries())

	b.rest(t, http.MethodPost, "/v1/hooks/1/verify", p.AccessToken, "")
	b.srv.RecordEvent("contact.delete", 3)
	b.srv.RecordEvent("company.add", 4)
	n, err := b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got := rc.got()
	require.Len(t, got, 1)
	require.Equal(t, []int64{3}, []int64{got[0].ObjectKeys[0].ID})
}

func TestDeliverInactiveAfterFourFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	rc := newReceiver(t, true)
	ok := newReceiver(t, true)
	b.createHook(t, p.AccessToken, "contact.add", rc.ts.URL)
	b.createHook(t, p.AccessToken, "contact.add", ok.ts.URL)
	rc.status.Store(http.StatusServiceUnavailable)

	for range 1500 {
		b.srv.PutContact(map[string]any{})
	}
	for attempt := 1; attempt <= 4; attempt++ {
		n, err := b.srv.Deliver(context.Background())
		require.NoError(t, err)
		if attempt == 1 {
			require.Equal(t, 3, n, "one failed POST for the bad hook, two for the good one")
		} else {
			require.Equal(t, 1, n)
		}
		if attempt < 4 {
			require.Equal(t, HookVerified, b.srv.Hooks()[0].Status)
			require.Equal(t, 1500, b.srv.PendingDeliveries(), "kept for the retry")
		}
	}
	require.Equal(t, HookInactive, b.srv.Hooks()[0].Status)
	require.Equal(t, HookVerified, b.srv.Hooks()[1].Status)
	require.Zero(t, b.srv.PendingDeliveries())
	require.Len(t, rc.got(), 4)
	require.Len(t, ok.got(), 2)

	n, err := b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestDeliverRetrySucceedsAndResetsFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	rc := newReceiver(t, true)
	b.createHook(t, p.AccessToken, "contact.add", rc.ts.URL)

	b.srv.PutContact(map[string]any{"id": 10})
	for range 3 {
		rc.status.Store(http.StatusInternalServerError)
		_, err := b.srv.Deliver(context.Background())
		require.NoError(t, err)
	}
	rc.status.Store(http.StatusFound) // 3xx counts as success
	n, err := b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Zero(t, b.srv.PendingDeliveries())

	// The count restarted: three more failures do not deactivate.
	b.srv.PutContact(map[string]any{"id": 11})
	rc.status.Store(http.StatusInternalServerError)
	for range 3 {
		_, err := b.srv.Deliver(context.Background())
		require.NoError(t, err)
	}
	require.Equal(t, HookVerified, b.srv.Hooks()[0].Status)
}

func TestDeliverInactiveOn410AndTransportErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	gone := newReceiver(t, true)
	b.createHook(t, p.AccessToken, "contact.add", gone.ts.URL)
	gone.status.Store(http.StatusGone)
	b.srv.PutContact(map[string]any{})
	n, err := b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, HookInactive, b.srv.Hooks()[0].Status)

	// A receiver that went away fails by transport error.
	var logged atomic.Int32
	b2 := setup(t, func(o *Options) { o.Logf = func(string, ...any) { logged.Add(1) } })
	p2 := b2.srv.Mint()
	rc := newReceiver(t, true)
	b2.createHook(t, p2.AccessToken, "contact.add", rc.ts.URL)
	rc.ts.Close()
	b2.srv.PutContact(map[string]any{})
	for range 4 {
		n, err := b2.srv.Deliver(context.Background())
		require.NoError(t, err)
		require.Equal(t, 1, n)
	}
	require.Equal(t, HookInactive, b2.srv.Hooks()[0].Status)
	require.NotZero(t, logged.Load())
}

func TestDeliverStopsOnContextCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	ctx, cancel := context.WithCancel(context.Background())
	rc := newReceiver(t, true)
	b.createHook(t, p.AccessToken, "contact.add", rc.ts.URL)
	rc.onPost = func(r *http.Request) {
		if r.Header.Get("X-Hook-Secret") == "" {
			cancel()
		}
	}
	for range 1200 {
		b.srv.PutContact(map[string]any{})
	}
	n, err := b.srv.Deliver(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 1, n)
	require.Equal(t, HookVerified, b.srv.Hooks()[0].Status, "our cancellation is not the receiver's failure")
	require.Equal(t, 1200, b.srv.PendingDeliveries())

	n, err = b.srv.Deliver(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, n)
}

func TestDeliverRaw(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rc := newReceiver(t, true)
	forged := fixture(t, "hook_delivery_contact_delete.json")
	resp, err := b.srv.DeliverRaw(context.Background(), rc.ts.URL, forged)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, [][]byte{forged}, rc.rawBodies())
	require.Equal(t, "contact.delete", rc.got()[0].EventKey)

	_, err = b.srv.DeliverRaw(context.Background(), "://bad", nil)
	require.Error(t, err)
}

func TestThrottleNext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()

	b.srv.ThrottleNext("/crm/rest/v1/hooks", 2, "", nil)
	b.srv.ThrottleNext("/token", 1, "7", fixture(t, "throttle_429_quota_apigee.json"))

	r := b.rest(t, http.MethodGet, "/v1/contacts/1", p.AccessToken, "")
	require.Equal(t, http.StatusNotFound, r.status, "other paths are not throttled")
	for range 2 {
		r = b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
		require.Equal(t, http.StatusTooManyRequests, r.status)
		_, has := r.header["Retry-After"]
		require.False(t, has)
		requireBody(t, fixture(t, "throttle_429_quota_new.json"), r)
		require.Equal(t, "ab123", r.header.Get("x-keap-tenant-id"))
		require.NotEmpty(t, r.header.Get("x-keap-product-throttle-available"))
	}
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)

	r = b.refresh(t, p.RefreshToken)
	require.Equal(t, http.StatusTooManyRequests, r.status)
	require.Equal(t, "7", r.header.Get("Retry-After"))
	requireBody(t, fixture(t, "throttle_429_quota_apigee.json"), r)
	require.True(t, b.srv.RefreshTokenLive(p.RefreshToken), "a throttled refresh is not processed")
	tokenPair(t, b.refresh(t, p.RefreshToken))

	b.srv.ThrottleNext("", 0, "", nil) // n <= 0: no rule
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.srv.FailNext("", 1, http.StatusBadGateway, []byte("<html>bad gateway</html>"))
	b.srv.FailNext("/crm/rest", 1, http.StatusServiceUnavailable, []byte(`{"message":"down"}`))

	r := b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.Equal(t, http.StatusBadGateway, r.status)
	require.Equal(t, "<html>bad gateway</html>", string(r.body))
	require.Contains(t, r.header.Get("Content-Type"), "text/plain")

	r = b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Contains(t, r.header.Get("Content-Type"), "application/json")

	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)

	b.srv.FailNext("/app", 1, http.StatusInternalServerError, nil)
	require.Equal(t, http.StatusInternalServerError, b.do(t, http.MethodGet, "/app/oauth/authorize", nil, "").status)

	b.srv.FailNext("", 5, http.StatusInternalServerError, nil)
	b.srv.ClearFaults()
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.srv.SetRateLimit(3)

	var avail []string
	for range 3 {
		r := b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, "3", r.header.Get("x-keap-product-throttle-limit"))
		avail = append(avail, r.header.Get("x-keap-product-throttle-available"))
	}
	require.Equal(t, []string{"2", "1", "0"}, avail)

	r := b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "")
	require.Equal(t, http.StatusTooManyRequests, r.status)
	requireBody(t, fixture(t, "throttle_429_spike_apigee.json"), r)
	require.Empty(t, r.header.Get("Retry-After"))
	r = b.refresh(t, p.RefreshToken)
	require.Equal(t, http.StatusTooManyRequests, r.status, "the token endpoint shares the limit")
	require.True(t, b.srv.RefreshTokenLive(p.RefreshToken))
	require.Equal(t, http.StatusFound, b.do(t, http.MethodGet, "/app/oauth/authorize?client_id=fake-client-id&redirect_uri=https://x/cb&response_type=code", nil, "").status,
		"authorize is not rate limited")

	b.clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)

	b.srv.SetRateLimit(0)
	for range 10 {
		require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)
	}
}

func TestDropAfterProcessNext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.srv.DropAfterProcessNext(1)

	h := http.Header{
		"Content-Type":  {"application/x-www-form-urlencoded"},
		"Authorization": {"Basic " + basic("fake-client-id", "fake-client-secret")},
	}
	req, err := http.NewRequest(http.MethodPost, b.ts.URL+"/token",
		strings.NewReader(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {p.RefreshToken}}.Encode()))
	require.NoError(t, err)
	req.Header = h
	resp, err := b.client.Do(req)
	if resp != nil {
		resp.Body.Close()
	}
	require.Error(t, err, "the client sees no response")

	require.False(t, b.srv.RefreshTokenLive(p.RefreshToken), "but the refresh was processed")
	r := b.refresh(t, p.RefreshToken)
	require.Equal(t, http.StatusBadRequest, r.status)
	requireBody(t, fixture(t, "token_error_invalid_grant.json"), r)

	reqs := b.srv.TokenRequests("refresh_token")
	require.Len(t, reqs, 2)
	require.Zero(t, reqs[0].Status)
	require.Equal(t, http.StatusBadRequest, reqs[1].Status)
}

func TestDropWithoutHijackerAborts(t *testing.T) {
	t.Parallel()
	srv := New(Options{})
	rt := srv.Mint().RefreshToken
	srv.DropAfterProcessNext(1)
	req := httptest.NewRequest(http.MethodPost, "/token",
		strings.NewReader(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("fake-client-id", "fake-client-secret")
	require.PanicsWithValue(t, http.ErrAbortHandler, func() { srv.ServeHTTP(httptest.NewRecorder(), req) })
	require.False(t, srv.RefreshTokenLive(rt))
	require.Same(t, srv, srv.Handler())
}

func TestLatency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.srv.SetLatency(50 * time.Millisecond)

	start := time.Now()
	require.Equal(t, http.StatusOK, b.rest(t, http.MethodGet, "/v1/hooks", p.AccessToken, "").status)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)

	b.srv.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.ts.URL+"/crm/rest/v1/hooks", nil)
	require.NoError(t, err)
	_, err = b.client.Do(req)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	b.srv.SetLatency(0)

	// The abandoned request is logged with status 0, once its handler has given up.
	require.Eventually(t, func() bool {
		reqs := b.srv.Requests()
		return len(reqs) == 2 && reqs[1].Status == 0
	}, 5*time.Second, 5*time.Millisecond)
}

func TestRequestLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()
	b.clock.Advance(time.Second)

	b.rest(t, http.MethodGet, "/v1/contacts/1?optional_properties=custom_fields", p.AccessToken, "")
	r := b.refresh(t, p.RefreshToken)
	require.Equal(t, http.StatusOK, r.status)
	b.do(t, http.MethodPost, "/token", http.Header{"Content-Type": {"application/json"}}, `{"grant_type":"refresh_token"}`)
	big := strings.Repeat("a", 70<<10)
	b.rest(t, http.MethodPost, "/v1/hooks", p.AccessToken, big)

	reqs := b.srv.Requests()
	require.Len(t, reqs, 4)

	get := reqs[0]
	require.Equal(t, http.MethodGet, get.Method)
	require.Equal(t, "/crm/rest/v1/contacts/1", get.Path)
	require.Equal(t, "custom_fields", get.Query.Get("optional_properties"))
	require.Equal(t, p.AccessToken, get.Bearer)
	require.Equal(t, http.StatusNotFound, get.Status)
	require.Nil(t, get.Form)
	require.Equal(t, b.clock.Now(), get.Time)

	tok := reqs[1]
	require.Equal(t, "application/x-www-form-urlencoded", tok.ContentType)
	require.Equal(t, "refresh_token", tok.Form.Get("grant_type"))
	require.Equal(t, p.RefreshToken, tok.Form.Get("refresh_token"))
	require.Contains(t, string(tok.Body), "grant_type=refresh_token")
	require.True(t, tok.HasBasic)
	require.Equal(t, "fake-client-id", tok.BasicUser)
	require.Equal(t, "fake-client-secret", tok.BasicPass)
	require.Empty(t, tok.Bearer)
	require.Equal(t, http.StatusOK, tok.Status)

	jsonTok := reqs[2]
	require.Nil(t, jsonTok.Form)
	require.Equal(t, http.StatusBadRequest, jsonTok.Status)
	require.Len(t, reqs[3].Body, 64<<10)

	require.Len(t, b.srv.TokenRequests(""), 2)
	require.Len(t, b.srv.TokenRequests("refresh_token"), 1)
	require.Empty(t, b.srv.TokenRequests("authorization_code"))

	// Copies: changing what we got changes nothing inside.
	reqs[0].Path = "changed"
	require.Equal(t, "/crm/rest/v1/contacts/1", b.srv.Requests()[0].Path)

	b.srv.ResetLog()
	require.Empty(t, b.srv.Requests())
}

func TestTenants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := b.srv.Tenant("cd456")
	require.Equal(t, "cd456", other.Name())

	pa := b.srv.Mint()
	pb := other.Mint()
	require.Equal(t, "full|cd456.infusionsoft.com", pb.Scope)

	idA := b.srv.PutContact(map[string]any{"given_name": "in ab123"})
	idB := other.PutContact(map[string]any{"given_name": "in cd456"})
	require.Equal(t, idA, idB, "ids are per tenant")

	r := b.rest(t, http.MethodGet, "/v1/contacts/1", pb.AccessToken, "")
	require.Equal(t, "in cd456", r.json(t)["given_name"])
	require.Equal(t, "cd456", r.header.Get("x-keap-tenant-id"))
	r = b.rest(t, http.MethodGet, "/v1/contacts/1", pa.AccessToken, "")
	require.Equal(t, "in ab123", r.json(t)["given_name"])

	rc := newReceiver(t, true)
	b.createHook(t, pb.AccessToken, "contact.edit", rc.ts.URL)
	require.Empty(t, b.srv.Hooks())
	require.Len(t, other.Hooks(), 1)
	other.PutContact(map[string]any{"id": 1, "given_name": "edited"})
	b.srv.PutContact(map[string]any{"id": 1, "given_name": "edited"})
	n, err := b.srv.Deliver(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	c, ok := other.Contact(1)
	require.True(t, ok)
	require.Equal(t, "edited", c["given_name"])
	other.DeleteContact(1)
	other.RecordEvent("contact.edit", 9)
	other.SetHookStatus("1", HookInactive)
	require.Zero(t, b.srv.PendingDeliveries())

	// The consent screen can pick another app; tokens from its code belong to it.
	b.srv.SetAuthorizeTenant("ef789")
	r = b.do(t, http.MethodGet, authorizeURL(url.Values{
		"client_id": {"fake-client-id"}, "redirect_uri": {"https://x.example/cb"}, "response_type": {"code"},
	}), nil, "")
	loc, err := url.Parse(r.header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, "full|ef789.infusionsoft.com", loc.Query().Get("scope"))
	code := b.srv.AuthorizeCode("https://x.example/cb")
	pe := tokenPair(t, b.token(t, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://x.example/cb"},
	}, true))
	require.Equal(t, "full|ef789.infusionsoft.com", pe.Scope)
	require.Equal(t, "full|ef789.infusionsoft.com", b.srv.Mint().Scope)
	require.Equal(t, "full|cd456.infusionsoft.com", tokenPair(t, b.token(t, url.Values{
		"grant_type": {"authorization_code"}, "code": {other.AuthorizeCode("https://x.example/cb")},
		"redirect_uri": {"https://x.example/cb"},
	}, true)).Scope)
}

// CASES.md 1: many callers refreshing with one token at once; exactly one wins.
func TestConcurrentRefreshOneWinner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.srv.Mint()

	const callers = 16
	var wg sync.WaitGroup
	statuses := make([]int, callers)
	for i := range callers {
		wg.Go(func() {
			statuses[i] = b.refresh(t, p.RefreshToken).status
		})
	}
	wg.Wait()
	won := 0
	for _, st := range statuses {
		if st == http.StatusOK {
			won++
		} else {
			require.Equal(t, http.StatusBadRequest, st)
		}
	}
	require.Equal(t, 1, won)
}

func TestIssuedSecrets(t *testing.T) {
	t.Parallel()
	srv := New(Options{})
	p := srv.Mint()
	code := srv.AuthorizeCode("https://x.example/cb")
	require.ElementsMatch(t, []string{p.AccessToken, p.RefreshToken, code}, srv.IssuedSecrets())
}

func TestTokenPairString(t *testing.T) {
	t.Parallel()
	p := TokenPair{AccessToken: "abcdefghijkl", RefreshToken: "mnopqrstuvwx", ExpiresIn: 5, Scope: "full|a.infusionsoft.com"}
	s := p.String()
	require.NotContains(t, s, "abcdefghijkl")
	require.NotContains(t, s, "mnopqrstuvwx")
	require.Contains(t, s, "abcdef")
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	require.Equal(t, "invoice.payment", objectType("invoice.payment.add"))
	require.Equal(t, "plain", objectType("plain"))
	for v, want := range map[any]int64{int(3): 3, int32(4): 4, int64(5): 5, 6.0: 6, json.Number("7"): 7, "8": 8, nil: 0, true: 0} {
		require.Equal(t, want, idOf(v), "%T", v)
	}
	require.Equal(t, -1, compareKeys("2", "10"))
	require.Equal(t, 1, compareKeys("3", "2"))
	require.Equal(t, -1, compareKeys("2", "3"))
	require.Equal(t, 0, compareKeys("2", "2"))

	// writeJSON reports values that cannot be encoded.
	w := httptest.NewRecorder()
	writeJSON(w, http.StatusOK, make(chan int))
	require.Equal(t, http.StatusInternalServerError, w.Code)

	// A bare writer gets a throwaway log entry.
	require.NotNil(t, entryOf(httptest.NewRecorder()))
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	s := New(Options{})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	post := func(path, body string) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := post("/_fake/contacts", `{"given_name":"Ada"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var created struct{ ID int64 }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	c, ok := s.Contact(created.ID)
	require.True(t, ok)
	require.Equal(t, "Ada", c["given_name"])
	require.Equal(t, http.StatusBadRequest, post("/_fake/contacts", `[1]`).StatusCode)

	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/_fake/contacts/"+strconv.FormatInt(created.ID, 10), nil)
	dresp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	dresp.Body.Close()
	require.Equal(t, http.StatusNoContent, dresp.StatusCode)
	_, ok = s.Contact(created.ID)
	require.False(t, ok)

	require.Equal(t, http.StatusOK, post("/_fake/deliver", ``).StatusCode)
	require.Equal(t, http.StatusBadRequest, post("/_fake/hooks/1/status", `{"status":"Sleepy"}`).StatusCode)
	require.Equal(t, http.StatusNotFound, post("/_fake/nothing", ``).StatusCode)
	require.Empty(t, s.Requests(), "admin calls stay out of the request log")
}

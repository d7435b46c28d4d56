package httpapi_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/httpapi"
	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/tokens"
)

const apiKey = "test-internal-api-key-0123456789"

var ctx = context.Background()

type bundle struct {
	h   *keaptest.Harness
	url string
}

func setup(t *testing.T) bundle {
	t.Helper()
	h := keaptest.New(t, keaptest.Options{CacheTTL: 30 * time.Second})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{
		Pool: h.Pool, Store: h.Store, Tokens: h.Tokens, Logger: h.Log, APIKey: apiKey, OAuthRateLimit: 1000,
	}))
	t.Cleanup(srv.Close)
	return bundle{h: h, url: srv.URL}
}

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// do sends a request; auth "" means no Authorization header.
func (b bundle) do(t *testing.T, method, path, auth, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, b.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err)
	r := read(t, resp)
	require.NotEqual(t, http.StatusInternalServerError, r.Status, "never a 500: %s %s -> %s", method, path, r.Raw)
	return r
}

// read reads and closes resp's body.
func read(t *testing.T, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// raw sends request as written, for what net/http's client will not send
// (a broken chunked body), and reads the response.
func (b bundle) raw(t *testing.T, request string) response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, request)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	return read(t, resp)
}

func (b bundle) authed(t *testing.T, method, path, body string) response {
	return b.do(t, method, path, "Bearer "+apiKey, body)
}

func requireError(t *testing.T, r response, status int, code string) {
	t.Helper()
	require.Equal(t, status, r.Status, r.Raw)
	require.Equal(t, code, r.Body["error"], r.Raw)
	require.NotEmpty(t, r.Body["message"])
	require.Contains(t, r.Header.Get("Content-Type"), "application/json")
}

// authorize starts the flow for id and returns the callback query Keap's
// authorize endpoint redirects the browser with.
func (b bundle) authorize(t *testing.T, id string) url.Values {
	t.Helper()
	r := b.authed(t, "POST", "/oauth/initiate", `{"keap_account_id":"`+id+`"}`)
	require.Equal(t, http.StatusCreated, r.Status, r.Raw)
	authURL := r.Body["authorization_url"].(string)
	require.Contains(t, r.Raw, `"authorization_url":"`+authURL+`"`, "the URL is usable as printed")
	require.NotEmpty(t, r.Body["state"])
	require.NotEmpty(t, r.Body["expires_at"])

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(authURL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, keaptest.RedirectURI, loc.Scheme+"://"+loc.Host+loc.Path)
	require.Equal(t, r.Body["state"], loc.Query().Get("state"))
	return loc.Query()
}

func (b bundle) countRows(t *testing.T) (accounts, toks int) {
	t.Helper()
	require.NoError(t, b.h.Pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM keapsync.accounts), (SELECT count(*) FROM keapsync.oauth_tokens)").Scan(&accounts, &toks))
	return
}

func TestOAuthFlowStoresOnlyCiphertext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := b.authorize(t, "acme")
	r := b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.Contains(t, r.Raw, "acme")

	tok := b.authed(t, "GET", "/oauth/token/acme", "")
	require.Equal(t, http.StatusOK, tok.Status, tok.Raw)
	require.Equal(t, "bearer", tok.Body["token_type"])
	access := tok.Body["access_token"].(string)
	require.True(t, b.h.Fake.AccessTokenLive(access))
	row := b.h.Row("acme")
	refresh := b.h.Open(row, "refresh_token")
	require.Equal(t, "ab123.infusionsoft.com", *row.Tenant)

	// The tokens' bytes appear nowhere in schema keapsync: not as text, not as bytes.
	dump := dumpSchema(t, b)
	for _, secret := range []string{access, refresh, q.Get("code")} {
		require.NotContains(t, dump, secret)
		require.NotContains(t, dump, hex.EncodeToString([]byte(secret)))
	}

	// A ciphertext copied onto another account's row does not open.
	b.h.Connect("other")
	_, err := b.h.Pool.Exec(ctx, `UPDATE keapsync.oauth_tokens o SET access_token_ct = a.access_token_ct, refresh_token_ct = a.refresh_token_ct,
		key_id = a.key_id FROM keapsync.oauth_tokens a WHERE a.account_id = 'acme' AND o.account_id = 'other'`)
	require.NoError(t, err)
	_, err = b.h.Keyring.Open(row.KeyID, "other", "access_token", row.AccessTokenCT)
	require.Error(t, err)
	_, err = b.h.Tokens.Get(ctx, "other")
	require.Error(t, err, "the other account must not receive acme's token")

	// The access log names the route template and the account, never the path.
	require.Contains(t, b.h.Logs.String(), `"route":"/oauth/token/{account}"`)
	require.Contains(t, b.h.Logs.String(), `"account_id":"acme"`)

	// Status without secrets.
	list := b.authed(t, "GET", "/oauth/accounts", "")
	require.Equal(t, http.StatusOK, list.Status)
	require.NotContains(t, list.Raw, access)
	one := b.authed(t, "GET", "/oauth/accounts/acme", "")
	require.Equal(t, http.StatusOK, one.Status)
	require.Equal(t, "ok", one.Body["account"].(map[string]any)["health"])
	require.NotContains(t, one.Raw, refresh)

	// A replayed callback is refused and changes nothing.
	before := b.h.Row("acme").Version
	requireError(t, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", ""), http.StatusConflict, tokens.CodeStateReplayed)
	require.Equal(t, before, b.h.Row("acme").Version)
}

func dumpSchema(t *testing.T, b bundle) string {
	t.Helper()
	rows, err := b.h.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'keapsync' AND table_type = 'BASE TABLE'`)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		tables = append(tables, n)
	}
	require.NoError(t, rows.Err())
	require.Contains(t, tables, "oauth_tokens")
	var sb strings.Builder
	for _, tbl := range tables {
		rows, err := b.h.Pool.Query(ctx, "SELECT t::text FROM keapsync."+tbl+" t")
		require.NoError(t, err)
		for rows.Next() {
			var s string
			require.NoError(t, rows.Scan(&s))
			sb.WriteString(s + "\n")
		}
		require.NoError(t, rows.Err())
	}
	return sb.String()
}

func TestCallbackStateErrorsStoreNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)

	requireError(t, b.do(t, "GET", "/oauth/callback?code=abc", "", ""), http.StatusBadRequest, tokens.CodeStateMissing)
	requireError(t, b.do(t, "GET", "/oauth/callback?code=abc&state=nonsense", "", ""), http.StatusBadRequest, tokens.CodeStateUnknown)
	requireError(t, b.do(t, "GET", "/oauth/callback?code=abc&state="+strings.Repeat("x", 5000), "", ""), http.StatusBadRequest, tokens.CodeStateUnknown)

	// Keap's error= redirect, with a valid state.
	b.h.Fake.SetDenyAuthorize(true)
	q := b.authorize(t, "acme")
	require.Equal(t, "access_denied", q.Get("error"))
	requireError(t, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", ""), http.StatusForbidden, tokens.CodeAuthorizationDeny)
	b.h.Fake.SetDenyAuthorize(false)

	// Expired: 10 minutes is the limit.
	q = b.authorize(t, "acme")
	b.h.Clock.Advance(10*time.Minute + time.Second)
	requireError(t, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", ""), http.StatusGone, tokens.CodeStateExpired)

	// A code Keap refuses, and Keap failing during the exchange.
	q = b.authorize(t, "acme")
	q.Set("code", "forged")
	requireError(t, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", ""), http.StatusBadRequest, tokens.CodeCodeRejected)
	q = b.authorize(t, "acme")
	b.h.Fake.FailNext("/token", 1, 503, nil)
	requireError(t, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", ""), http.StatusBadGateway, tokens.CodeExchangeFailed)

	// Missing code.
	q = b.authorize(t, "acme")
	q.Del("code")
	requireError(t, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", ""), http.StatusBadRequest, tokens.CodeCodeMissing)

	a, toks := b.countRows(t)
	require.Zero(t, a)
	require.Zero(t, toks)

	// The state is bound to its account: a good callback connects that one.
	q = b.authorize(t, "bound-acct")
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", "").Status)
	_, err := b.h.Store.GetAccount(ctx, b.h.Pool, "bound-acct")
	require.NoError(t, err)
}

func TestCallbackRedirectsToSuccessURL(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{
		Pool: h.Pool, Store: h.Store, Tokens: h.Tokens, Logger: h.Log, APIKey: apiKey, OAuthSuccessURL: "https://app.example.com/done?x=1",
	}))
	t.Cleanup(srv.Close)
	b := bundle{h: h, url: srv.URL}
	q := b.authorize(t, "acme")
	r := b.do(t, "GET", "/oauth/callback?"+q.Encode(), "", "")
	require.Equal(t, http.StatusFound, r.Status)
	require.Equal(t, "https://app.example.com/done?keap_account_id=acme&x=1", r.Header.Get("Location"))
}

func TestTokenEndpointStatuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.h.Connect("acme")
	requireError(t, b.authed(t, "GET", "/oauth/token/nobody", ""), http.StatusNotFound, tokens.CodeAccountNotFound)

	// Keap down and the token expired: 503 with Retry-After.
	b.h.Clock.Advance(24 * time.Hour)
	b.h.Fake.FailNext("/token", 1, 500, nil)
	r := b.authed(t, "GET", "/oauth/token/acme", "")
	requireError(t, r, http.StatusServiceUnavailable, tokens.CodeKeapUnavailable)
	require.NotEmpty(t, r.Header.Get("Retry-After"))

	// Forced refresh after the backoff works and rotates.
	b.h.Clock.Advance(time.Hour)
	r = b.authed(t, "POST", "/oauth/refresh/acme", "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	got := b.authed(t, "GET", "/oauth/token/acme", "")
	require.Equal(t, r.Body["access_token"], got.Body["access_token"])

	// invalid_grant: 409.
	b.h.Fake.FailNext("/token", 1, 400, []byte(`{"error":"invalid_grant","error_description":"Invalid refresh token"}`))
	requireError(t, b.authed(t, "POST", "/oauth/refresh/acme", ""), http.StatusConflict, tokens.CodeReauthRequired)
	requireError(t, b.authed(t, "GET", "/oauth/token/acme", ""), http.StatusConflict, tokens.CodeReauthRequired)

	// Disconnect destroys; then 404.
	r = b.authed(t, "DELETE", "/oauth/accounts/acme", "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	requireError(t, b.authed(t, "GET", "/oauth/token/acme", ""), http.StatusNotFound, tokens.CodeAccountNotFound)
	requireError(t, b.authed(t, "DELETE", "/oauth/accounts/nobody", ""), http.StatusNotFound, tokens.CodeAccountNotFound)
	requireError(t, b.authed(t, "GET", "/oauth/accounts/nobody", ""), http.StatusNotFound, tokens.CodeAccountNotFound)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.h.Connect("acme")
	long := strings.Repeat("a", 129)
	cases := []struct {
		name, method, path, auth, body string
		status                         int
		code                           string
	}{
		{"malformed json", "POST", "/oauth/initiate", "ok", `{"keap_account_id":`, 400, "invalid_json"},
		{"not an object", "POST", "/oauth/initiate", "ok", `"acme"`, 400, "invalid_json"},
		{"two objects", "POST", "/oauth/initiate", "ok", `{"keap_account_id":"a"}{}`, 400, "invalid_json"},
		{"empty body", "POST", "/oauth/initiate", "ok", ``, 400, "invalid_json"},
		{"missing account id", "POST", "/oauth/initiate", "ok", `{}`, 400, "invalid_account_id"},
		{"wrong type account id", "POST", "/oauth/initiate", "ok", `{"keap_account_id":42}`, 400, "invalid_json"},
		{"malformed account id", "POST", "/oauth/initiate", "ok", `{"keap_account_id":"a b"}`, 400, "invalid_account_id"},
		{"too long account id", "POST", "/oauth/initiate", "ok", `{"keap_account_id":"` + long + `"}`, 400, "invalid_account_id"},
		{"malformed path id", "GET", "/oauth/token/a%20b", "ok", ``, 400, "invalid_account_id"},
		{"unicode path id", "GET", "/oauth/token/%C3%A9", "ok", ``, 400, "invalid_account_id"},
		{"long path id", "GET", "/oauth/token/" + long, "ok", ``, 400, "invalid_account_id"},
		{"unknown account", "GET", "/oauth/token/ghost", "ok", ``, 404, "account_not_found"},
		{"missing bearer", "GET", "/oauth/token/acme", "", ``, 401, "unauthorized"},
		{"wrong bearer", "GET", "/oauth/token/acme", "Bearer nope", ``, 401, "unauthorized"},
		{"bearer prefix only", "GET", "/oauth/token/acme", "Bearer " + apiKey[:10], ``, 401, "unauthorized"},
		{"basic instead of bearer", "GET", "/oauth/accounts", "Basic " + apiKey, ``, 401, "unauthorized"},
		{"no bearer on initiate", "POST", "/oauth/initiate", "", `{"keap_account_id":"x"}`, 401, "unauthorized"},
		{"oversized body", "POST", "/oauth/initiate", "ok", `{"keap_account_id":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "body_too_large"},
		{"unknown route", "GET", "/nope", "", ``, 404, "not_found"},
		{"dot id", "GET", "/oauth/token/..", "ok", ``, 400, "invalid_account_id"},
		{"encoded dots", "GET", "/oauth/token/%2e%2e", "ok", ``, 400, "invalid_account_id"},
		{"dot id initiate", "POST", "/oauth/initiate", "ok", `{"keap_account_id":"."}`, 400, "invalid_account_id"},
		{"traversal", "GET", "/oauth/accounts/x%2F..%2F..%2Faccounts", "ok", ``, 404, "not_found"},
		{"double slash", "POST", "/oauth//refresh/acme", "ok", ``, 404, "not_found"},
		{"wrong method", "PUT", "/oauth/token/acme", "ok", ``, 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		auth := tc.auth
		if auth == "ok" {
			auth = "Bearer " + apiKey
		}
		r := b.do(t, tc.method, tc.path, auth, tc.body)
		require.Equal(t, tc.status, r.Status, "%s: %s", tc.name, r.Raw)
		require.Equal(t, tc.code, r.Body["error"], "%s: %s", tc.name, r.Raw)
	}
	a, _ := b.countRows(t)
	require.Equal(t, 1, a, "bad input stores nothing")
	var states int
	require.NoError(t, b.h.Pool.QueryRow(ctx, "SELECT count(*) FROM keapsync.oauth_states").Scan(&states))
	require.Zero(t, states)
}

func TestUnreadableBodyAndBearerScheme(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.raw(t, "POST /oauth/initiate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+apiKey+
		"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
	require.Equal(t, http.StatusBadRequest, r.Status, r.Raw)
	require.Equal(t, "invalid_body", r.Body["error"], r.Raw)

	// The scheme name is case-insensitive (RFC 9110); the key is not.
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/oauth/accounts", "bearer "+apiKey, "").Status)
	require.Equal(t, http.StatusUnauthorized, b.do(t, "GET", "/oauth/accounts", "bearer "+strings.ToUpper(apiKey), "").Status)
	// Only HTTP's own spaces may surround the key, not Unicode ones.
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/oauth/accounts", "Bearer  "+apiKey, "").Status)
	for _, odd := range []string{apiKey + "\u00a0", "\u2003" + apiKey, apiKey + "\u0085"} {
		require.Equal(t, http.StatusUnauthorized, b.do(t, "GET", "/oauth/accounts", "Bearer "+odd, "").Status, "%q", odd)
	}
}

func TestOversizedChunkedBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// No Content-Length: the limit must hold while reading.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"keap_account_id":"`))
		_, _ = pw.Write([]byte(strings.Repeat("a", 2<<20)))
		_ = pw.Close()
	}()
	req, err := http.NewRequest("POST", b.url+"/oauth/initiate", pr)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

func TestRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{
		Pool: h.Pool, Store: h.Store, Tokens: h.Tokens, Logger: h.Log, APIKey: apiKey, OAuthRateLimit: 2,
	}))
	t.Cleanup(srv.Close)
	b := bundle{h: h, url: srv.URL}
	limited := 0
	for range 20 {
		r := b.do(t, "GET", "/oauth/accounts", "Bearer wrong-key", "")
		if r.Status == http.StatusTooManyRequests {
			limited++
			requireError(t, r, http.StatusTooManyRequests, "rate_limited")
			require.Equal(t, "1", r.Header.Get("Retry-After"))
		} else {
			requireError(t, r, http.StatusUnauthorized, "unauthorized")
		}
	}
	require.GreaterOrEqual(t, limited, 10, "failed bearer attempts are limited per address")
	// The callback shares the address's budget.
	requireError(t, b.do(t, "GET", "/oauth/callback?state=x&code=y", "", ""), http.StatusTooManyRequests, "rate_limited")
	// Authenticated callers from the same address are not starved.
	for range 20 {
		require.Equal(t, http.StatusOK, b.do(t, "GET", "/oauth/accounts", "Bearer "+apiKey, "").Status)
	}
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/healthz", "", "").Status)
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/healthz", "", "").Status)
	require.Equal(t, http.StatusOK, b.do(t, "HEAD", "/healthz", "", "").Status)
	require.Equal(t, http.StatusOK, b.do(t, "GET", "/readyz", "", "").Status)
	m := b.do(t, "GET", "/metrics", "", "")
	require.Equal(t, http.StatusOK, m.Status)

	_, err := b.h.Pool.Exec(ctx, "DELETE FROM keapsync.schema_migrations WHERE version = (SELECT max(version) FROM keapsync.schema_migrations)")
	require.NoError(t, err)
	resp, err := http.Get(b.url + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

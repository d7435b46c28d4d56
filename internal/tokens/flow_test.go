package tokens_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// begin starts the flow for id and returns the callback Keap would send.
func begin(t *testing.T, h *keaptest.Harness, id string) tokens.CallbackParams {
	t.Helper()
	a, err := h.Tokens.Initiate(ctx, id)
	require.NoError(t, err)
	require.WithinDuration(t, h.Clock.Now().Add(tokens.StateTTL), a.ExpiresAt, time.Second)
	u, err := url.Parse(a.URL)
	require.NoError(t, err)
	require.Equal(t, a.State, u.Query().Get("state"))
	code := h.Fake.AuthorizeCode(keaptest.RedirectURI)
	return tokens.CallbackParams{Code: code, State: a.State, Scope: "full|ab123.infusionsoft.com"}
}

func TestStateIsHashedSingleUseAndBound(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	p := begin(t, h, "acme")

	var stored int
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT count(*) FROM keapsync.oauth_states WHERE state_hash = $1 OR state_hash::text LIKE '%'||$2||'%'",
		[]byte(p.State), p.State).Scan(&stored))
	require.Zero(t, stored, "the state is stored only as a hash")

	id, err := h.Tokens.Callback(ctx, p)
	require.NoError(t, err)
	require.Equal(t, "acme", id, "the state names the account it was issued for")
	require.Len(t, h.Fake.TokenRequests("authorization_code"), 1)

	_, err = h.Tokens.Callback(ctx, p)
	require.Equal(t, tokens.CodeStateReplayed, tokens.ErrorCode(err))
	require.Len(t, h.Fake.TokenRequests("authorization_code"), 1, "a replay never reaches keap")

	n, err := h.Tokens.PurgeStates(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a fresh state is kept")
	h.Clock.Advance(25 * time.Hour)
	n, err = h.Tokens.PurgeStates(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestCallbackFailuresStoreNothing(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	cases := []struct {
		name string
		mod  func(p *tokens.CallbackParams)
		code string
	}{
		{"missing state", func(p *tokens.CallbackParams) { p.State = "" }, tokens.CodeStateMissing},
		{"unknown state", func(p *tokens.CallbackParams) { p.State = "made-up" }, tokens.CodeStateUnknown},
		{"huge state", func(p *tokens.CallbackParams) { p.State = strings.Repeat("s", 300) }, tokens.CodeStateUnknown},
		{"denied", func(p *tokens.CallbackParams) { p.Error, p.ErrorDescription = "access_denied", "user said no" }, tokens.CodeAuthorizationDeny},
		{"other keap error", func(p *tokens.CallbackParams) { p.Error = "server_error" }, tokens.CodeAuthorizationFail},
		{"missing code", func(p *tokens.CallbackParams) { p.Code = "" }, tokens.CodeCodeMissing},
		{"rejected code", func(p *tokens.CallbackParams) { p.Code = "forged" }, tokens.CodeCodeRejected},
	}
	for _, tc := range cases {
		p := begin(t, h, "acme")
		tc.mod(&p)
		_, err := h.Tokens.Callback(ctx, p)
		require.Equal(t, tc.code, tokens.ErrorCode(err), tc.name)
		require.NotEmpty(t, err.Error())
	}

	p := begin(t, h, "acme")
	h.Clock.Advance(tokens.StateTTL + time.Second)
	_, err := h.Tokens.Callback(ctx, p)
	require.Equal(t, tokens.CodeStateExpired, tokens.ErrorCode(err))

	p = begin(t, h, "acme")
	h.Fake.FailNext("/token", 1, 500, nil)
	_, err = h.Tokens.Callback(ctx, p)
	require.Equal(t, tokens.CodeExchangeFailed, tokens.ErrorCode(err))

	var accounts, toks int
	require.NoError(t, h.Pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM keapsync.accounts), (SELECT count(*) FROM keapsync.oauth_tokens)").Scan(&accounts, &toks))
	require.Zero(t, accounts)
	require.Zero(t, toks)
}

func TestThrottledRefreshHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	h.Clock.Advance(24 * time.Hour)
	h.Fake.ThrottleNext("/token", 1, "120", nil)
	_, err := h.Tokens.Get(ctx, "acme")
	var te *tokens.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, tokens.CodeKeapUnavailable, te.Code)
	require.Equal(t, 120*time.Second, te.RetryAfter)
	require.False(t, h.Row("acme").LastFailureAmbiguous, "a 429 was not processed")
}

func TestRejectedCredentialsKeepTheAccountConnected(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	h.Connect("acme")
	h.Fake.FailNext("/token", 1, 400, []byte(`{"error": "invalid_request", "error_description": "Invalid Refresh Token"}`))
	_, err := h.Tokens.Refresh(ctx, "acme")
	var te *tokens.Error
	require.ErrorAs(t, err, &te)
	require.Equal(t, tokens.CodeKeapUnavailable, te.Code)
	require.Equal(t, 10*time.Minute, te.RetryAfter)
	acct, err := h.Store.GetAccount(ctx, h.Pool, "acme")
	require.NoError(t, err)
	require.Equal(t, "connected", acct.Status, "our credentials failing says nothing about the account's refresh token")
	// The old access token is still handed out meanwhile.
	_, err = h.Tokens.Get(ctx, "acme")
	require.NoError(t, err)
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	t.Parallel()
	prev := time.Duration(0)
	for n := 1; n <= 12; n++ {
		d := tokens.Backoff(n)
		base := min(5*time.Second<<(n-1), 10*time.Minute)
		require.GreaterOrEqual(t, d, base, "n=%d", n)
		require.LessOrEqual(t, d, base+base/5, "n=%d", n)
		require.GreaterOrEqual(t, d+base/5, prev)
		prev = d
	}
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	_, err := h.Tokens.Refresh(ctx, "nobody")
	require.Equal(t, tokens.CodeAccountNotFound, tokens.ErrorCode(err))
	require.Contains(t, err.Error(), "account_not_found")
	require.Equal(t, "", tokens.ErrorCode(nil))
	h.Connect("acme")
	h.SetStatus("acme", store.StatusReauthRequired)
	_, err = h.Tokens.Refresh(ctx, "acme")
	require.Equal(t, tokens.CodeReauthRequired, tokens.ErrorCode(err))
}

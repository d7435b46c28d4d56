// Package keap talks to Keap: the OAuth token endpoint (code exchange and
// refresh) and, later, the REST API. Every failure is classified here, once,
// into an *Error whose Kind tells callers whether to retry.
package keap

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/keapsync/keapsync/internal/seal"
)

// Options configure a Client. Zero values get the defaults noted.
type Options struct {
	ClientID     string
	ClientSecret seal.Secret
	RedirectURI  string
	AuthURL      string
	TokenURL     string
	APIURL       string
	HTTPClient   *http.Client     // default: a client with Timeout
	Timeout      time.Duration    // bound on one token request, default 15s
	Now          func() time.Time // default time.Now
	// RatePerSecond and RatePerMinute bound REST calls of this process,
	// defaults 20 and 1,400: under Keap's 25/s spike arrest and 1,500/min
	// quota, which every tenant of the client id shares.
	RatePerSecond float64
	RatePerMinute float64
}

// Client is safe for concurrent use. It keeps no tokens: each refresh is
// built from the refresh token the caller read from the vault, because
// x/oauth2's TokenSource never reports a rotated refresh token.
type Client struct {
	opts     Options
	limit    *limiter
	exchange oauth2.Config // credentials in the body, as Keap's code exchange expects
	refresh  oauth2.Config // credentials in Authorization: Basic, as Keap's refresh expects
}

// New returns a Client.
func New(o Options) *Client {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.Timeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RatePerSecond <= 0 {
		o.RatePerSecond = 20
	}
	if o.RatePerMinute <= 0 {
		o.RatePerMinute = 1400
	}
	o.APIURL = strings.TrimRight(o.APIURL, "/")
	base := oauth2.Config{
		ClientID:     o.ClientID,
		ClientSecret: o.ClientSecret.Reveal(),
		RedirectURL:  o.RedirectURI,
		Scopes:       []string{"full"},
	}
	c := &Client{opts: o, limit: newLimiter(o.RatePerSecond, o.RatePerMinute), exchange: base, refresh: base}
	c.exchange.Endpoint = oauth2.Endpoint{AuthURL: o.AuthURL, TokenURL: o.TokenURL, AuthStyle: oauth2.AuthStyleInParams}
	c.refresh.Endpoint = oauth2.Endpoint{AuthURL: o.AuthURL, TokenURL: o.TokenURL, AuthStyle: oauth2.AuthStyleInHeader}
	return c
}

// Token is what Keap's token endpoint returned, with the expiry made absolute.
type Token struct {
	AccessToken  seal.Secret
	RefreshToken seal.Secret
	ExpiresAt    time.Time
	Scope        string // e.g. "full|ab123.infusionsoft.com"
}

// Tenant is the Keap app named in the scope ("ab123.infusionsoft.com"), or "".
func (t Token) Tenant() string { return TenantFromScope(t.Scope) }

// TenantFromScope returns the part of a Keap scope after "|".
func TenantFromScope(scope string) string {
	_, tenant, _ := strings.Cut(scope, "|")
	return strings.TrimSpace(tenant)
}

// AuthCodeURL is where the browser goes to authorize; state must be random.
func (c *Client) AuthCodeURL(state string) string {
	return c.exchange.AuthCodeURL(state)
}

// Exchange trades an authorization code for tokens.
func (c *Client) Exchange(ctx context.Context, code string) (Token, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if err := c.limit.wait(ctx); err != nil {
		return Token{}, &Error{Op: "code exchange", Kind: Transient, Message: "waiting for the keap rate limiter: " + err.Error()}
	}
	tok, err := c.exchange.Exchange(c.ctx(ctx), code)
	if err != nil {
		return Token{}, classify("code exchange", err)
	}
	return c.token("code exchange", tok)
}

// Refresh spends refreshToken once and returns the rotated pair. After an
// error whose Ambiguous is true, Keap may already have rotated the token.
func (c *Client) Refresh(ctx context.Context, refreshToken seal.Secret) (Token, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if err := c.limit.wait(ctx); err != nil {
		// Nothing was sent: not ambiguous.
		return Token{}, &Error{Op: "refresh", Kind: Transient, Message: "waiting for the keap rate limiter: " + err.Error()}
	}
	// An expired token makes the one-shot TokenSource refresh immediately.
	src := c.refresh.TokenSource(c.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken.Reveal(), Expiry: time.Unix(1, 0)})
	tok, err := src.Token()
	if err != nil {
		return Token{}, classify("refresh", err)
	}
	return c.token("refresh", tok)
}

func (c *Client) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.opts.HTTPClient)
}

func (c *Client) token(op string, tok *oauth2.Token) (Token, error) {
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		return Token{}, &Error{Op: op, Kind: Transient, Ambiguous: true, Message: "token response lacks access_token or refresh_token"}
	}
	var expiresIn int64
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		expiresIn = int64(v)
	case string:
		expiresIn, _ = strconv.ParseInt(v, 10, 64)
	}
	expires := c.opts.Now().Add(time.Duration(expiresIn) * time.Second)
	if expiresIn <= 0 {
		// Keap always sends expires_in; without it assume the shortest sane life.
		expires = c.opts.Now().Add(time.Hour)
	}
	scope, _ := tok.Extra("scope").(string)
	return Token{
		AccessToken:  seal.Secret(tok.AccessToken),
		RefreshToken: seal.Secret(tok.RefreshToken),
		ExpiresAt:    expires,
		Scope:        scope,
	}, nil
}

// classify turns an x/oauth2 or transport error into an *Error. Messages
// carry Keap's error code and description, never a request or token.
func classify(op string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e := &Error{Op: op, Code: re.ErrorCode, Description: truncate(re.ErrorDescription, 200)}
		if re.Response != nil {
			e.Status = re.Response.StatusCode
			e.RetryAfter = ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		}
		switch {
		case e.Status == http.StatusTooManyRequests:
			e.Kind = Throttled
		case e.Status >= 500 || e.Status == 0:
			e.Kind, e.Ambiguous = Transient, true
		case e.Code == "invalid_grant":
			e.Kind = Permanent
		default: // invalid_client, invalid_request, 401 and any other 4xx
			e.Kind = Permanent
			if e.Code == "" {
				e.Code = "http_" + strconv.Itoa(e.Status)
			}
		}
		return e
	}
	return transportError(op, err)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ParseRetryAfter reads a Retry-After header (seconds or HTTP date); 0 when absent or unreadable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

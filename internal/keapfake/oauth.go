package keapfake

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Token endpoint error bodies, byte for byte the files in testdata/keap/ (copies of the shared Keap fixtures).
const (
	// TokenErrorJSONBody is token_error_json_body.json: the answer to a non-form token request.
	TokenErrorJSONBody = `{"error": "invalid_request", "error_description": "response_type or grant_type is required"}`
	// TokenErrorInvalidGrant is token_error_invalid_grant.json: an unknown, used or expired
	// refresh token.
	TokenErrorInvalidGrant = `{"error": "invalid_grant", "error_description": "Invalid refresh token"}`
	// TokenErrorInvalidRequestRefresh is token_error_invalid_request_refresh.json: Keap's
	// misleading answer to a refresh with wrong client credentials.
	TokenErrorInvalidRequestRefresh = `{"error": "invalid_request", "error_description": "Invalid Refresh Token"}`
)

const codeTTL = 10 * time.Minute

// TokenPair is what a successful token request returns.
type TokenPair struct {
	AccessToken, RefreshToken string
	ExpiresIn                 int
	Scope                     string
}

type authCode struct {
	tenant      string
	redirectURI string
	expires     time.Time
	used        bool
}

type accessGrant struct {
	tenant  string
	expires time.Time
	revoked bool
}

type refreshGrant struct {
	tenant  string
	expires time.Time
	used    bool
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	TokenType    string `json:"token_type"`
	Scope        string `json:"scope"`
}

func scopeFor(tenant string) string { return "full|" + tenant + ".infusionsoft.com" }

// handleAuthorize auto-approves for the authorize tenant and redirects back with a code.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.opts.ClientID {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client", "Unknown client_id")
		return
	}
	redirectURI := q.Get("redirect_uri")
	target, err := url.Parse(redirectURI)
	if redirectURI == "" || err != nil || !target.IsAbs() {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "A valid redirect_uri is required")
		return
	}
	if len(s.opts.RedirectURIs) > 0 && !slices.Contains(s.opts.RedirectURIs, redirectURI) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "redirect_uri does not match the registered one")
		return
	}

	// From here on errors go back to the client through the redirect (RFC 6749 §4.1.2.1).
	params := target.Query()
	if state, ok := q["state"]; ok {
		params["state"] = state
	}
	s.mu.Lock()
	deny := s.faults.denyAuthorize
	tenant := s.authTenant
	s.mu.Unlock()
	switch {
	case q.Get("response_type") != "code":
		params.Set("error", "unsupported_response_type")
		params.Set("error_description", "response_type must be code")
	case q.Has("scope") && q.Get("scope") != "full":
		params.Set("error", "invalid_scope")
		params.Set("error_description", "The only scope is full")
	case deny:
		params.Set("error", "access_denied")
		params.Set("error_description", "The user denied access")
	default:
		params.Set("code", s.issueCode(tenant, redirectURI))
		params.Set("scope", scopeFor(tenant))
	}
	target.RawQuery = params.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

// AuthorizeCode issues a code for redirectURI as the authorize endpoint would.
func (s *Server) AuthorizeCode(redirectURI string) string {
	s.mu.Lock()
	tenant := s.authTenant
	s.mu.Unlock()
	return s.issueCode(tenant, redirectURI)
}

func (s *Server) issueCode(tenant, redirectURI string) string {
	code := randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = &authCode{tenant: tenant, redirectURI: redirectURI, expires: s.now().Add(codeTTL)}
	return code
}

// Mint issues a live token pair for the authorize tenant, as a code exchange would.
func (s *Server) Mint() TokenPair {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintLocked(s.authTenant)
}

func (s *Server) mintLocked(tenant string) TokenPair {
	now := s.now()
	at, rt := randomToken(), randomToken()
	s.access[at] = &accessGrant{tenant: tenant, expires: now.Add(s.opts.AccessTTL)}
	s.refresh[rt] = &refreshGrant{tenant: tenant, expires: now.Add(s.opts.RefreshTTL)}
	expiresIn := int(s.opts.AccessTTL / time.Second)
	if expiresIn > 1 {
		expiresIn-- // Keap answers 86399 for a 24 h token
	}
	return TokenPair{AccessToken: at, RefreshToken: rt, ExpiresIn: expiresIn, Scope: scopeFor(tenant)}
}

// ExpireAccess makes accessToken invalid from now on, whatever the clock says later.
func (s *Server) ExpireAccess(accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.access[accessToken]; g != nil {
		g.revoked = true
	}
}

// RefreshTokenLive reports whether rt would be accepted by a refresh now.
func (s *Server) RefreshTokenLive(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.refresh[rt]
	return g != nil && !g.used && s.now().Before(g.expires)
}

// AccessTokenLive reports whether the REST API would accept accessToken now.
func (s *Server) AccessTokenLive(accessToken string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accessTenantLocked(accessToken, true) != nil
}

// accessTenantLocked returns the tenant accessToken belongs to, or nil. With live set, a revoked
// or expired token yields nil too.
func (s *Server) accessTenantLocked(accessToken string, live bool) *tenant {
	g := s.access[accessToken]
	if g == nil || live && (g.revoked || !s.now().Before(g.expires)) {
		return nil
	}
	return s.tenants[g.tenant]
}

// handleToken serves POST /token. When a drop is armed the request is processed in full, so
// tokens rotate, and then the connection is closed without an answer.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed")
		return
	}
	status, body := s.exchange(r, entryOf(w))
	if s.takeDrop() {
		s.logf("keapfake: dropping connection after token request answered %d", status)
		abortConnection(w)
		return
	}
	writeRaw(w, status, body)
}

// exchange runs one token request and returns the status and body Keap would send.
func (s *Server) exchange(r *http.Request, entry *Request) (int, []byte) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return http.StatusBadRequest, []byte(TokenErrorJSONBody)
	}
	if err := r.ParseForm(); err != nil {
		return http.StatusBadRequest, []byte(TokenErrorJSONBody)
	}
	form := r.PostForm
	grant := form.Get("grant_type")
	if grant == "" {
		return http.StatusBadRequest, []byte(TokenErrorJSONBody)
	}
	if grant != "authorization_code" && grant != "refresh_token" {
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "Unsupported grant_type "+grant)
	}

	credsOK := s.checkClient(r, form, entry)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if grant == "authorization_code" {
		if !credsOK {
			return oauthError(http.StatusUnauthorized, "invalid_client", "Unauthorized")
		}
		c := s.codes[form.Get("code")]
		if c == nil || c.used || !now.Before(c.expires) {
			return oauthError(http.StatusBadRequest, "invalid_grant", "Invalid authorization code")
		}
		if form.Get("redirect_uri") != c.redirectURI {
			return oauthError(http.StatusBadRequest, "invalid_grant", "Redirect URI mismatch")
		}
		c.used = true
		return tokenOK(s.mintLocked(c.tenant))
	}

	if !credsOK {
		return http.StatusBadRequest, []byte(TokenErrorInvalidRequestRefresh)
	}
	g := s.refresh[form.Get("refresh_token")]
	if g == nil || g.used || !now.Before(g.expires) {
		return http.StatusBadRequest, []byte(TokenErrorInvalidGrant)
	}
	g.used = true // strict rotation: dead at once, no grace window
	return tokenOK(s.mintLocked(g.tenant))
}

// checkClient validates the client credentials, from HTTP Basic or else the body, and records in
// the log which placement was used.
func (s *Server) checkClient(r *http.Request, form url.Values, entry *Request) bool {
	id, secret, basic := r.BasicAuth()
	how := ClientAuthBasic
	if !basic {
		id, secret = form.Get("client_id"), form.Get("client_secret")
		how = ClientAuthBody
		if !form.Has("client_id") && !form.Has("client_secret") {
			how = ClientAuthNone
		}
	}
	s.mu.Lock()
	entry.ClientAuth = how
	s.mu.Unlock()
	return subtle.ConstantTimeCompare([]byte(id), []byte(s.opts.ClientID)) == 1 &&
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) == 1
}

func tokenOK(p TokenPair) (int, []byte) {
	b, _ := json.Marshal(tokenResponse{
		AccessToken:  p.AccessToken,
		RefreshToken: p.RefreshToken,
		ExpiresIn:    p.ExpiresIn,
		TokenType:    "bearer",
		Scope:        p.Scope,
	})
	return http.StatusOK, b
}

func oauthError(status int, code, description string) (int, []byte) {
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": description})
	return status, b
}

func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	status, body := oauthError(status, code, description)
	writeRaw(w, status, body)
}

// String helps failing test output name a pair without printing the secrets in full.
func (p TokenPair) String() string {
	return fmt.Sprintf("TokenPair{access:%.6s… refresh:%.6s… expires_in:%d scope:%s}",
		p.AccessToken, p.RefreshToken, p.ExpiresIn, p.Scope)
}

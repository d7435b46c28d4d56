package keapfake

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Server. Zero values get the defaults noted on each field.
type Options struct {
	// ClientID and ClientSecret are the only credentials the fake accepts. Defaults
	// "fake-client-id" and "fake-client-secret".
	ClientID, ClientSecret string
	// Tenant is the default Keap app name; scopes read "full|<tenant>.infusionsoft.com".
	// Default "ab123".
	Tenant string
	// RedirectURIs, when set, are the registered redirect URIs: authorize refuses others with
	// 400. Empty means any absolute URL is accepted.
	RedirectURIs []string
	// AccessTTL is the access token lifetime. Default 24h. expires_in reports one second less,
	// as Keap's 86399 does.
	AccessTTL time.Duration
	// RefreshTTL is how long an unused refresh token lives. Default 45 days.
	RefreshTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// HTTPClient sends the handshake and delivery POSTs. Default: 30 s timeout (Keap's limit)
	// and redirects not followed, because Keap counts a 3xx as success.
	HTTPClient *http.Client
	// Logf, if set, receives a line for each handshake and delivery outcome.
	Logf func(format string, args ...any)
}

// Server is the fake Keap. It is an http.Handler, and it is safe for concurrent use.
type Server struct {
	opts  Options
	mux   *http.ServeMux
	admin *http.ServeMux

	// deliverMu serializes Deliver. Two flushes must not send the same queued events.
	deliverMu sync.Mutex

	mu         sync.Mutex
	tenants    map[string]*tenant
	authTenant string
	codes      map[string]*authCode
	access     map[string]*accessGrant
	refresh    map[string]*refreshGrant
	lastStamp  time.Time
	eventSeq   uint64
	quota      quotaCounters
	faults     faultState
	log        []*Request
}

// tenant holds one Keap app's data. Contact ids and hook keys are per tenant, as at Keap.
type tenant struct {
	name          string
	contacts      map[int64]*contact
	nextContactID int64
	hooks         map[string]*hook
	nextHookKey   int
	minuteStart   time.Time
	minuteUsed    int
}

// New returns a Server with opts' zero values replaced by their defaults.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = "fake-client-id"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "fake-client-secret"
	}
	if opts.Tenant == "" {
		opts.Tenant = "ab123"
	}
	if opts.AccessTTL <= 0 {
		opts.AccessTTL = 24 * time.Hour
	}
	if opts.RefreshTTL <= 0 {
		opts.RefreshTTL = 45 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{
			Timeout: 30 * time.Second,
			// A fresh connection per POST: reusing a keep-alive connection
			// the receiver is just closing fails a POST with a spurious EOF
			// (POSTs are not retried), which would count as a failed attempt.
			Transport: &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	s := &Server{
		opts:       opts,
		tenants:    map[string]*tenant{},
		authTenant: opts.Tenant,
		codes:      map[string]*authCode{},
		access:     map[string]*accessGrant{},
		refresh:    map[string]*refreshGrant{},
	}
	s.tenantLocked(opts.Tenant)
	s.mux = s.routes()
	s.admin = s.adminRoutes()
	return s
}

// Handler returns s. It exists for symmetry with servers that build a separate handler.
func (s *Server) Handler() http.Handler { return s }

// routes lists the whole fake API.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app/oauth/authorize", s.handleAuthorize)
	mux.HandleFunc("/token", s.handleToken)

	mux.HandleFunc("GET /crm/rest/v1/contacts/{id}", s.authed(s.handleGetContact))
	mux.HandleFunc("GET /crm/rest/v1/hooks/event_keys", s.authed(s.handleEventKeys))
	mux.HandleFunc("GET /crm/rest/v1/hooks", s.authed(s.handleListHooks))
	mux.HandleFunc("POST /crm/rest/v1/hooks", s.authed(s.handleCreateHook))
	mux.HandleFunc("GET /crm/rest/v1/hooks/{key}", s.authed(s.handleGetHook))
	mux.HandleFunc("PUT /crm/rest/v1/hooks/{key}", s.authed(s.handleUpdateHook))
	mux.HandleFunc("DELETE /crm/rest/v1/hooks/{key}", s.authed(s.handleDeleteHook))
	mux.HandleFunc("POST /crm/rest/v1/hooks/{key}/verify", s.authed(s.handleVerifyHook))
	mux.HandleFunc("POST /crm/rest/v1/hooks/{key}/delayedVerify", s.authed(s.handleDelayedVerify))
	mux.HandleFunc("/crm/rest/", s.authed(func(w http.ResponseWriter, _ *http.Request, _ *tenant) {
		writeMessage(w, http.StatusNotFound, "Resource Not Found")
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeMessage(w, http.StatusNotFound, "Not Found")
	})
	return mux
}

// maxBody bounds what a request body may be. The log keeps at most maxLoggedBody bytes of it.
const (
	maxBody       = 8 << 20
	maxLoggedBody = 64 << 10
)

// ServeHTTP logs the request, then applies the fault knobs in the order a request meets them at
// Keap: network latency, injected failures, the gateway's rate limit, and then the endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, AdminPrefix) {
		s.admin.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "unreadable body")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	rec := &recorder{ResponseWriter: w, s: s, entry: s.logRequest(r, body)}
	if !s.wait(r) {
		return
	}
	if s.injectFault(rec, r) {
		return
	}
	if isAPIPath(r.URL.Path) && !s.admit(rec, r) {
		return
	}
	s.mux.ServeHTTP(rec, r)
}

// Tenant returns the view of the Keap app named name, creating it if needed. The Server's own
// seeding methods (PutContact, Hooks, ...) act on Options.Tenant.
func (s *Server) Tenant(name string) *Tenant {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tenantLocked(name)
	return &Tenant{s: s, name: name}
}

// SetAuthorizeTenant chooses the app the fake user picks on Keap's consent screen. Later
// authorize redirects, AuthorizeCode and Mint issue grants for it. Default Options.Tenant.
func (s *Server) SetAuthorizeTenant(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tenantLocked(name)
	s.authTenant = name
}

func (s *Server) tenantLocked(name string) *tenant {
	t := s.tenants[name]
	if t == nil {
		t = &tenant{
			name:          name,
			contacts:      map[int64]*contact{},
			nextContactID: 1,
			hooks:         map[string]*hook{},
			nextHookKey:   1,
		}
		s.tenants[name] = t
	}
	return t
}

// sortedTenantsLocked returns the tenants by name, so Deliver's order is stable.
func (s *Server) sortedTenantsLocked() []*tenant {
	out := make([]*tenant, 0, len(s.tenants))
	for _, t := range s.tenants {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (s *Server) now() time.Time { return s.opts.Now() }

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// randomToken returns 24 random bytes, base64url-encoded: 32 URL-safe characters.
func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	ct := "text/plain; charset=utf-8"
	if json.Valid(body) {
		ct = "application/json;charset=UTF-8"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeMessage(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeRaw(w, status, b)
}

// writeMessage writes Keap's usual REST error shape, {"message":"..."}.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

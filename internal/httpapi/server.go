// Package httpapi is keapsync's HTTP surface: the OAuth flow, token hand-out
// to internal callers, account status, Keap's REST hooks and their
// management, health and metrics. routes.go lists
// the whole API; handlers only translate between HTTP and internal/tokens.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// MaxBodyBytes is the largest request body accepted; more gets 413.
const MaxBodyBytes = 1 << 20

// AccountIDPattern is what an account id must match.
var AccountIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Deps are what the server uses.
type Deps struct {
	Pool            *pgxpool.Pool
	Store           *store.Store
	Tokens          *tokens.Coordinator
	Hooks           *hooks.Manager
	Inbox           *inbox.Inbox
	Logger          *slog.Logger
	APIKey          seal.Secret
	OAuthSuccessURL string
	OAuthRateLimit  float64               // requests/second per client address on /oauth/*, default 20
	Gatherer        prometheus.Gatherer   // for /metrics, default prometheus.DefaultGatherer
	Registerer      prometheus.Registerer // for HTTP metrics, nil = none
}

// Server is an http.Handler.
type Server struct {
	Deps
	handler  http.Handler
	gatherer prometheus.Gatherer
	keyHash  [32]byte
	limiter  *ipLimiter
	requests *prometheus.CounterVec
}

// NewServer builds the handler.
func NewServer(d Deps) *Server {
	if d.OAuthRateLimit <= 0 {
		d.OAuthRateLimit = 20
	}
	s := &Server{
		Deps:     d,
		gatherer: d.Gatherer,
		keyHash:  sha256.Sum256([]byte(d.APIKey.Reveal())),
		limiter:  newIPLimiter(rate.Limit(d.OAuthRateLimit), int(2*d.OAuthRateLimit)+1),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keapsync_http_requests_total", Help: "HTTP requests by route template and status.",
		}, []string{"route", "status"}),
	}
	if s.gatherer == nil {
		s.gatherer = prometheus.DefaultGatherer
	}
	if d.Registerer != nil {
		d.Registerer.MustRegister(s.requests)
	}
	s.handler = s.routes()
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// bearer requires "Authorization: Bearer <INTERNAL_API_KEY>" (the scheme in
// any case, RFC 9110). Hashing both sides first makes the comparison
// constant-time in the key's length too. Failed attempts count against the
// client address's rate limit.
func (s *Server) bearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		ok := strings.EqualFold(scheme, "Bearer")
		// Only HTTP's own white space (RFC 9110 OWS) may surround the key.
		h := sha256.Sum256([]byte(strings.Trim(got, " \t")))
		if !ok || subtle.ConstantTimeCompare(h[:], s.keyHash[:]) != 1 {
			if !s.limiter.allow(clientIP(r), time.Now()) {
				writeError(w, r, &apiError{Code: "rate_limited", Message: "too many requests from this address", RetryAfter: 1})
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="keapsync"`)
			writeError(w, r, &apiError{Code: "unauthorized", Message: "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody caps request bodies; a declared length over the cap is refused
// before reading.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBodyBytes {
			writeError(w, r, &apiError{Code: "body_too_large", Message: "request body exceeds 1048576 bytes"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// rateLimit allows each client address a steady rate with some burst.
func (s *Server) rateLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.limiter.allow(clientIP(r), time.Now()) {
			writeError(w, r, &apiError{Code: "rate_limited", Message: "too many requests from this address", RetryAfter: 1})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientIP is the connection's peer address. X-Forwarded-For is not trusted:
// anyone could set it to dodge the limit.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type ipLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*ipEntry
	swept time.Time
}

type ipEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(l rate.Limit, burst int) *ipLimiter {
	return &ipLimiter{limit: l, burst: burst, m: map[string]*ipEntry{}}
}

func (l *ipLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Forget addresses idle long enough to have a full bucket again.
		for k, e := range l.m {
			if now.Sub(e.seen) > time.Minute {
				delete(l.m, k)
			}
		}
		l.swept = now
	}
	e, ok := l.m[ip]
	if !ok {
		e = &ipEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.m[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// logWriter records the status for the access log and metrics, and the
// matched route, which only the router knows (see routeInfo).
type logWriter struct {
	http.ResponseWriter
	status  int
	err     error
	route   string
	account string
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests writes one line per request. It logs the route template, never
// the raw path or query: those carry states, codes and hook secrets.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lw := &logWriter{ResponseWriter: w, route: "unmatched"}
		next.ServeHTTP(lw, r)
		if lw.status == 0 {
			lw.status = http.StatusOK
		}
		s.requests.WithLabelValues(lw.route, http.StatusText(lw.status)).Inc()
		attrs := []any{"method", r.Method, "route", lw.route, "status", lw.status, "duration_ms", time.Since(start).Milliseconds()}
		if lw.account != "" {
			attrs = append(attrs, "account_id", lw.account)
		}
		level := slog.LevelDebug
		if lw.err != nil {
			level = slog.LevelError
			attrs = append(attrs, "error", lw.err.Error())
		}
		s.Logger.Log(r.Context(), level, "http request", attrs...)
	})
}

// routeInfo runs inside the router, where the matched route is known, and
// hands its template and a valid account id to logRequests.
func (s *Server) routeInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lw, ok := w.(*logWriter); ok {
			if cr := mux.CurrentRoute(r); cr != nil {
				if t, err := cr.GetPathTemplate(); err == nil {
					lw.route = t
				}
			}
			if acct := mux.Vars(r)["account"]; ValidAccountID(acct) {
				lw.account = acct
			}
		}
		next.ServeHTTP(w, r)
	})
}

// ValidAccountID reports whether id matches AccountIDPattern and is not made
// only of dots ("." and ".." are path segments, not names).
func ValidAccountID(id string) bool {
	return AccountIDPattern.MatchString(id) && strings.Trim(id, ".") != ""
}

// recoverer turns a panic into a 500 JSON error instead of a dropped
// connection, and logs it once.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Logger.ErrorContext(r.Context(), "panic in handler", "panic", v)
				writeError(w, r, &apiError{Code: "internal", Message: "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// readyCheck reports whether the database answers and the schema is current.
func (s *Server) readyCheck(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.Pool.Ping(ctx); err != nil {
		return err
	}
	return store.CheckCurrent(ctx, s.Pool)
}

// Package config turns the environment into a validated Config once, at
// start-up. A missing or malformed variable stops the program with one line
// naming it; nothing else in keapsync reads the environment.
package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/seal"
)

// Keap's real endpoints, used unless overridden (the fake Keap overrides them).
const (
	DefaultAuthURL  = "https://accounts.infusionsoft.com/app/oauth/authorize"
	DefaultTokenURL = "https://api.infusionsoft.com/token"
	DefaultAPIURL   = "https://api.infusionsoft.com/crm/rest"
)

// Config is every setting keapsync reads. Defaults are noted per field.
type Config struct {
	DatabaseURL      string        // DATABASE_URL, required
	KeapClientID     string        // KEAP_CLIENT_ID, required
	KeapClientSecret seal.Secret   // KEAP_CLIENT_SECRET, required
	KeapRedirectURI  string        // KEAP_REDIRECT_URI, required; https unless host is localhost/127.0.0.1
	KeapAuthURL      string        // KEAP_AUTH_URL, default DefaultAuthURL
	KeapTokenURL     string        // KEAP_TOKEN_URL, default DefaultTokenURL
	KeapAPIURL       string        // KEAP_API_URL, default DefaultAPIURL
	Keyring          *seal.Keyring // TOKEN_ENCRYPTION_KEYS, required
	InternalAPIKey   seal.Secret   // INTERNAL_API_KEY, required, >= 16 chars
	ListenAddr       string        // LISTEN_ADDR, default ":8080"
	PublicBaseURL    string        // PUBLIC_BASE_URL, default "http://localhost:8080"
	RefreshEvery     time.Duration // REFRESH_EVERY, default 21h
	RefreshSkew      time.Duration // REFRESH_SKEW, default 5m
	PoolerMode       string        // DB_POOLER_MODE, "session" (default) or "transaction"
	OAuthSuccessURL  string        // OAUTH_SUCCESS_URL, optional: callback redirects there
	SupabaseURL      string        // SUPABASE_URL, optional
	SupabaseKey      seal.Secret   // SUPABASE_SERVICE_ROLE_KEY, optional
	// EVENTS_WEBHOOK_URL, optional: account state changes are POSTed there,
	// signed with EVENTS_WEBHOOK_SECRET (then required, "whsec_" + base64).
	EventsWebhookURL    string
	EventsWebhookSecret seal.Secret
	// SUPABASE_EVENTS_FUNCTION, optional: an Edge Function of the project at
	// SUPABASE_URL that gets the same POSTs (needs SUPABASE_SERVICE_ROLE_KEY).
	SupabaseEventsFunction string
	LogLevel               string        // LOG_LEVEL, default "info"
	LogFormat              string        // LOG_FORMAT, "json" (default) or "text"
	TokenCacheTTL          time.Duration // TOKEN_CACHE_TTL, default 30s; 0 turns the cache off
	OAuthRateLimit         float64       // OAUTH_RATE_LIMIT, requests/second per client address on /oauth/*, default 20
	// KEAP_RATE_PER_SECOND / KEAP_RATE_PER_MINUTE bound this process's calls
	// to Keap's REST API, defaults 20 and 1400 (Keap: ~25/s, 1,500/min per client id).
	KeapRatePerSecond float64
	KeapRatePerMinute float64
	// JobWorkers is JOB_WORKERS, River workers in this process, default 10;
	// 0 makes a replica that only serves HTTP (it still inserts jobs).
	JobWorkers int
	// PprofAddr is PPROF_ADDR: when set (e.g. 127.0.0.1:6060), net/http/pprof
	// listens there, apart from the API. Default off.
	PprofAddr string
}

// Load reads the environment through getenv.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	c := Config{
		DatabaseURL:            l.required("DATABASE_URL"),
		KeapClientID:           l.required("KEAP_CLIENT_ID"),
		KeapClientSecret:       seal.Secret(l.required("KEAP_CLIENT_SECRET")),
		KeapRedirectURI:        l.required("KEAP_REDIRECT_URI"),
		KeapAuthURL:            l.optional("KEAP_AUTH_URL", DefaultAuthURL),
		KeapTokenURL:           l.optional("KEAP_TOKEN_URL", DefaultTokenURL),
		KeapAPIURL:             strings.TrimRight(l.optional("KEAP_API_URL", DefaultAPIURL), "/"),
		InternalAPIKey:         seal.Secret(l.required("INTERNAL_API_KEY")),
		ListenAddr:             l.optional("LISTEN_ADDR", ":8080"),
		PublicBaseURL:          strings.TrimRight(l.optional("PUBLIC_BASE_URL", "http://localhost:8080"), "/"),
		RefreshEvery:           l.duration("REFRESH_EVERY", 21*time.Hour),
		RefreshSkew:            l.duration("REFRESH_SKEW", 5*time.Minute),
		PoolerMode:             l.oneOf("DB_POOLER_MODE", "session", "session", "transaction"),
		OAuthSuccessURL:        l.optional("OAUTH_SUCCESS_URL", ""),
		SupabaseURL:            l.optional("SUPABASE_URL", ""),
		SupabaseKey:            seal.Secret(l.optional("SUPABASE_SERVICE_ROLE_KEY", "")),
		EventsWebhookURL:       l.optional("EVENTS_WEBHOOK_URL", ""),
		EventsWebhookSecret:    seal.Secret(l.optional("EVENTS_WEBHOOK_SECRET", "")),
		SupabaseEventsFunction: l.optional("SUPABASE_EVENTS_FUNCTION", ""),
		LogLevel:               l.oneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"),
		LogFormat:              l.oneOf("LOG_FORMAT", "json", "json", "text"),
		TokenCacheTTL:          l.duration("TOKEN_CACHE_TTL", 30*time.Second),
		OAuthRateLimit:         l.float("OAUTH_RATE_LIMIT", 20),
		KeapRatePerSecond:      l.float("KEAP_RATE_PER_SECOND", 20),
		KeapRatePerMinute:      l.float("KEAP_RATE_PER_MINUTE", 1400),
		JobWorkers:             l.count("JOB_WORKERS", 10),
		PprofAddr:              l.optional("PPROF_ADDR", ""),
	}
	if keys := l.required("TOKEN_ENCRYPTION_KEYS"); keys != "" {
		ring, err := seal.ParseKeyring(keys)
		if err != nil {
			l.fail("TOKEN_ENCRYPTION_KEYS", err.Error())
		}
		c.Keyring = ring
	}
	if c.KeapRedirectURI != "" {
		if err := CheckRedirectURI(c.KeapRedirectURI); err != nil {
			l.fail("KEAP_REDIRECT_URI", err.Error())
		}
	}
	if k := c.InternalAPIKey.Reveal(); k != "" && len(k) < 16 {
		l.fail("INTERNAL_API_KEY", "must be at least 16 characters")
	}
	l.urls("KEAP_AUTH_URL", "KEAP_TOKEN_URL", "KEAP_API_URL", "PUBLIC_BASE_URL")
	l.supabaseURL(c.SupabaseURL)
	l.events(c)
	if c.RefreshEvery <= c.RefreshSkew && l.err == nil {
		l.fail("REFRESH_EVERY", "must be longer than REFRESH_SKEW")
	}
	return c, l.err
}

// Supabase is what `keapsync supabase check` needs, without the Keap settings.
type Supabase struct {
	DatabaseURL string      // DATABASE_URL, required
	PoolerMode  string      // DB_POOLER_MODE
	URL         string      // SUPABASE_URL, required
	ServiceKey  seal.Secret // SUPABASE_SERVICE_ROLE_KEY, required
	AnonKey     seal.Secret // SUPABASE_ANON_KEY, optional
}

// LoadSupabase reads the Supabase settings through getenv, each required one
// named when missing, as Load does.
func LoadSupabase(getenv func(string) string) (Supabase, error) {
	l := loader{getenv: getenv}
	c := Supabase{
		DatabaseURL: l.required("DATABASE_URL"),
		PoolerMode:  l.oneOf("DB_POOLER_MODE", "session", "session", "transaction"),
		URL:         strings.TrimRight(l.required("SUPABASE_URL"), "/"),
		ServiceKey:  seal.Secret(l.required("SUPABASE_SERVICE_ROLE_KEY")),
		AnonKey:     seal.Secret(l.optional("SUPABASE_ANON_KEY", "")),
	}
	l.supabaseURL(c.URL)
	return c, l.err
}

// CheckRedirectURI insists on https, except for loopback hosts used locally.
// EVENTS_WEBHOOK_URL follows the same rule.
func CheckRedirectURI(raw string) error { return checkHTTPS(raw, false) }

// checkHTTPS insists on an absolute https URL with a usable port (http only
// on loopback: localhost, 127.0.0.1, ::1); bare also refuses a path, query
// or fragment, for base URLs that paths are appended to.
func checkHTTPS(raw string, bare bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("must be an absolute URL")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("has no valid port")
		}
	}
	if bare && (strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(raw, "?")) {
		return errors.New("must be the bare base URL, such as https://abc.supabase.co")
	}
	switch h := u.Hostname(); {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && (h == "localhost" || h == "127.0.0.1" || h == "::1"):
		return nil
	default:
		return errors.New("must use https (http only for localhost, 127.0.0.1 or ::1)")
	}
}

type loader struct {
	getenv func(string) string
	err    error
}

// fail records the first problem only: one line naming one variable.
func (l *loader) fail(name, msg string) {
	if l.err == nil {
		l.err = fmt.Errorf("config: %s %s", name, msg)
	}
}

var functionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// events checks the notification settings: a receiver URL needs https
// (http only on loopback) and a signing secret; an Edge Function needs the
// Supabase project and its service role key.
func (l *loader) events(c Config) {
	if s := c.EventsWebhookSecret.Reveal(); s != "" {
		if _, err := notify.ParseSecret(s); err != nil {
			l.fail("EVENTS_WEBHOOK_SECRET", err.Error())
		}
	}
	if c.EventsWebhookURL != "" {
		if err := CheckRedirectURI(c.EventsWebhookURL); err != nil {
			l.fail("EVENTS_WEBHOOK_URL", err.Error())
		}
		if c.EventsWebhookSecret.Reveal() == "" {
			l.fail("EVENTS_WEBHOOK_SECRET", "is required with EVENTS_WEBHOOK_URL")
		}
	}
	if c.SupabaseEventsFunction != "" {
		switch {
		case !functionName.MatchString(c.SupabaseEventsFunction):
			l.fail("SUPABASE_EVENTS_FUNCTION", "must be a function name such as keapsync-events")
		case c.SupabaseURL == "":
			l.fail("SUPABASE_URL", "is required with SUPABASE_EVENTS_FUNCTION")
		case c.SupabaseKey.Reveal() == "":
			l.fail("SUPABASE_SERVICE_ROLE_KEY", "is required with SUPABASE_EVENTS_FUNCTION")
		}
	}
}

// supabaseURL checks SUPABASE_URL, when set: every request to it carries the
// service role key (and supabase-go follows redirects with it attached), so
// it must be the project's own https base URL.
func (l *loader) supabaseURL(raw string) {
	if raw == "" {
		return
	}
	if err := checkHTTPS(raw, true); err != nil {
		l.fail("SUPABASE_URL", err.Error())
	}
}

// urls checks that each variable, when set, is an absolute http(s) URL.
func (l *loader) urls(names ...string) {
	for _, name := range names {
		if v := strings.TrimSpace(l.getenv(name)); v != "" {
			if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				l.fail(name, "must be an absolute http(s) URL")
			}
		}
	}
}

func (l *loader) required(name string) string {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		l.fail(name, "is required (every variable is listed in .env.example)")
	}
	return v
}

func (l *loader) optional(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) duration(name string, def time.Duration) time.Duration {
	v := l.optional(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		l.fail(name, "must be a non-negative Go duration such as 21h or 5m")
	}
	return d
}

func (l *loader) float(name string, def float64) float64 {
	v := l.optional(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	// NaN fails every comparison, so "f <= 0" alone would let it through.
	if err != nil || !(f > 0) || math.IsInf(f, 1) {
		l.fail(name, "must be a positive number")
	}
	return f
}

func (l *loader) count(name string, def int) int {
	v := l.optional(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000 {
		l.fail(name, "must be a whole number from 0 to 1000")
	}
	return n
}

func (l *loader) oneOf(name, def string, allowed ...string) string {
	v := l.optional(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	l.fail(name, "must be one of "+strings.Join(allowed, ", "))
	return def
}

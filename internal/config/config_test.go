package config_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/config"
)

func env(overrides map[string]string) func(string) string {
	base := map[string]string{
		"DATABASE_URL":          "postgres://localhost/x",
		"KEAP_CLIENT_ID":        "id",
		"KEAP_CLIENT_SECRET":    "secret",
		"KEAP_REDIRECT_URI":     "https://sync.example.com/oauth/callback",
		"TOKEN_ENCRYPTION_KEYS": "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"INTERNAL_API_KEY":      "0123456789abcdef",
	}
	for k, v := range overrides {
		base[k] = v
	}
	return func(k string) string { return base[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil))
	require.NoError(t, err)
	require.Equal(t, 21*time.Hour, c.RefreshEvery)
	require.Equal(t, 5*time.Minute, c.RefreshSkew)
	require.Equal(t, ":8080", c.ListenAddr)
	require.Equal(t, config.DefaultTokenURL, c.KeapTokenURL)
	require.Equal(t, "session", c.PoolerMode)
	require.Equal(t, "k1", c.Keyring.ActiveKeyID())
}

func TestEachProblemNamesItsVariable(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]string{
		"DATABASE_URL":             {"DATABASE_URL": ""},
		"KEAP_CLIENT_SECRET":       {"KEAP_CLIENT_SECRET": " "},
		"KEAP_REDIRECT_URI":        {"KEAP_REDIRECT_URI": "http://sync.example.com/cb"},
		"TOKEN_ENCRYPTION_KEYS":    {"TOKEN_ENCRYPTION_KEYS": "k1:short"},
		"INTERNAL_API_KEY":         {"INTERNAL_API_KEY": "short"},
		"REFRESH_EVERY":            {"REFRESH_EVERY": "often"},
		"DB_POOLER_MODE":           {"DB_POOLER_MODE": "statement"},
		"KEAP_TOKEN_URL":           {"KEAP_TOKEN_URL": "ftp://x"},
		"OAUTH_RATE_LIMIT":         {"OAUTH_RATE_LIMIT": "-1"},
		"KEAP_RATE_PER_SECOND":     {"KEAP_RATE_PER_SECOND": "NaN"},
		"KEAP_RATE_PER_MINUTE":     {"KEAP_RATE_PER_MINUTE": "+Inf"},
		"LOG_LEVEL":                {"LOG_LEVEL": "loud"},
		"SUPABASE_URL":             {"SUPABASE_URL": "abc.supabase.co"},
		"EVENTS_WEBHOOK_URL":       {"EVENTS_WEBHOOK_URL": "http://hooks.example.com/keapsync", "EVENTS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		"EVENTS_WEBHOOK_SECRET":    {"EVENTS_WEBHOOK_URL": "https://hooks.example.com/keapsync"},
		"SUPABASE_EVENTS_FUNCTION": {"SUPABASE_EVENTS_FUNCTION": "keapsync-events"},
	}
	for name, o := range cases {
		_, err := config.Load(env(o))
		require.Error(t, err, name)
		require.Contains(t, err.Error(), name)
		require.NotContains(t, err.Error(), "\n", "one line")
		require.NotContains(t, err.Error(), "secret")
	}
	_, err := config.Load(env(map[string]string{"REFRESH_EVERY": "1m", "REFRESH_SKEW": "5m"}))
	require.ErrorContains(t, err, "REFRESH_EVERY")
}

func TestRedirectURI(t *testing.T) {
	t.Parallel()
	for uri, ok := range map[string]bool{
		"https://sync.example.com/oauth/callback": true,
		"http://localhost:8080/oauth/callback":    true,
		"http://127.0.0.1:8080/oauth/callback":    true,
		"http://sync.example.com/oauth/callback":  false,
		"http://localhost.evil.com/cb":            false,
		"/oauth/callback":                         false,
		"javascript:alert(1)":                     false,
	} {
		err := config.CheckRedirectURI(uri)
		require.Equal(t, ok, err == nil, uri)
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(map[string]string{"KEAP_CLIENT_SECRET": "very-secret-value"}))
	require.NoError(t, err)
	require.False(t, strings.Contains(c.KeapClientSecret.String(), "very-secret-value"))
}

func TestLoadSupabase(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"SUPABASE_URL": "https://abc.supabase.co/", "SUPABASE_SERVICE_ROLE_KEY": "service-key"}
	c, err := config.LoadSupabase(env(vars))
	require.NoError(t, err)
	require.Equal(t, "https://abc.supabase.co", c.URL)
	require.Equal(t, "service-key", c.ServiceKey.Reveal())
	require.Empty(t, c.AnonKey.Reveal())
	require.Equal(t, "session", c.PoolerMode)

	for name, o := range map[string]map[string]string{
		"SUPABASE_URL":              {"SUPABASE_URL": ""},
		"SUPABASE_SERVICE_ROLE_KEY": {"SUPABASE_SERVICE_ROLE_KEY": ""},
		"DATABASE_URL":              {"DATABASE_URL": ""},
	} {
		merged := map[string]string{}
		for k, v := range vars {
			merged[k] = v
		}
		for k, v := range o {
			merged[k] = v
		}
		_, err := config.LoadSupabase(env(merged))
		require.ErrorContains(t, err, name)
	}
	// Every request to SUPABASE_URL carries the service role key.
	for raw, want := range map[string]string{
		"ftp://x":                         "SUPABASE_URL must use https",
		"http://abc.supabase.co":          "SUPABASE_URL must use https",
		"https://abc.supabase.co/?x=1":    "SUPABASE_URL must be the bare base URL",
		"https://abc.supabase.co/rest/v1": "SUPABASE_URL must be the bare base URL",
		"http://127.0.0.1:99999":          "SUPABASE_URL has no valid port",
		"http://127.0.0.1:54321":          "",
		"http://[::1]:54321/":             "",
	} {
		_, err = config.LoadSupabase(env(map[string]string{"SUPABASE_URL": raw, "SUPABASE_SERVICE_ROLE_KEY": "k"}))
		if want == "" {
			require.NoError(t, err, raw)
			continue
		}
		require.ErrorContains(t, err, want, raw)
		_, err = config.Load(env(map[string]string{"SUPABASE_URL": raw}))
		require.ErrorContains(t, err, want, raw)
	}
}

// TestEnvExampleListsEveryVariable records every name Load and LoadSupabase
// ask for and finds each set in .env.example.
func TestEnvExampleListsEveryVariable(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../.env.example")
	require.NoError(t, err)
	listed := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if name, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			listed[name] = true
		}
	}
	asked := map[string]bool{}
	record := func(name string) string { asked[name] = true; return "" }
	_, _ = config.Load(record)
	_, _ = config.LoadSupabase(record)
	require.NotEmpty(t, asked)
	for name := range asked {
		require.True(t, listed[name], ".env.example does not list %s", name)
	}
}

func TestNotificationSettings(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(map[string]string{
		"EVENTS_WEBHOOK_URL": "https://hooks.example.com/keapsync", "EVENTS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k", "SUPABASE_EVENTS_FUNCTION": "keapsync-events",
	}))
	require.NoError(t, err)
	require.Equal(t, "https://hooks.example.com/keapsync", c.EventsWebhookURL)
	require.Equal(t, "keapsync-events", c.SupabaseEventsFunction)

	for name, o := range map[string]map[string]string{
		"EVENTS_WEBHOOK_SECRET":     {"EVENTS_WEBHOOK_SECRET": "not-a-whsec-secret"},
		"SUPABASE_EVENTS_FUNCTION":  {"SUPABASE_EVENTS_FUNCTION": "../admin", "SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"},
		"SUPABASE_SERVICE_ROLE_KEY": {"SUPABASE_EVENTS_FUNCTION": "f", "SUPABASE_URL": "https://abc.supabase.co"},
	} {
		_, err := config.Load(env(o))
		require.ErrorContains(t, err, name)
		require.NotContains(t, err.Error(), "not-a-whsec-secret")
	}
	// Loopback receivers may use http, as the redirect URI may; a port must exist.
	for raw, ok := range map[string]bool{"http://127.0.0.1:9999/hook": true, "http://[::1]:9999/hook?t=1": true, "http://127.0.0.1:99999/x": false} {
		_, err = config.Load(env(map[string]string{"EVENTS_WEBHOOK_URL": raw, "EVENTS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
		require.Equal(t, ok, err == nil, "%s: %v", raw, err)
	}
}

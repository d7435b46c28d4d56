// Package exposure checks a Supabase project from the outside, through
// Supabase's own REST API (supabase-go), the way anyone holding the
// project's keys sees it. The anon key ships in every browser bundle, so it
// must read nothing keapsync writes; keapsync's own schema, which holds the
// sealed tokens, must not be reachable with any key; and the service role
// must see the synced tables that DATABASE_URL writes, which proves both
// settings name the same database.
//
// keapsync writes public.keap_* through DATABASE_URL, not through this API:
// the "older never overwrites newer" upsert and the inbox row it settles are
// one conditional INSERT in one transaction, which PostgREST cannot express.
// This package is where the API matters: it is the door the data could leak
// through.
package exposure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/supabase-community/supabase-go"

	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
)

// Status is a finding's verdict.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // inconclusive: say why and what to do
	Fail Status = "fail" // data is exposed, or the settings disagree
	Skip Status = "skip" // not checked (a key is missing)
)

// Finding is the outcome of one check.
type Finding struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// Synced are the tables the sync writes, in schema public.
var Synced = []string{"keap_contacts", "keap_objects"}

// privateTable is a keapsync table probed through the API: the one holding
// sealed tokens.
const privateTable = "oauth_tokens"

// Options configure Check.
type Options struct {
	URL        string      // SUPABASE_URL, e.g. https://abc.supabase.co
	ServiceKey seal.Secret // SUPABASE_SERVICE_ROLE_KEY, required
	AnonKey    seal.Secret // SUPABASE_ANON_KEY; empty skips the anon checks
	DB         store.DBTX  // DATABASE_URL's database
	Store      *store.Store
	// Timeout bounds each API call, default 10s. supabase-go takes no
	// context, so a call past it is abandoned, not cancelled.
	Timeout time.Duration
}

// Failed reports whether any finding failed.
func Failed(fs []Finding) bool {
	for _, f := range fs {
		if f.Status == Fail {
			return true
		}
	}
	return false
}

// Check runs every check. Its error is only for what stops the checks
// themselves (bad options, the database); what the API answers is a Finding.
func Check(ctx context.Context, o Options) ([]Finding, error) {
	if o.URL == "" || o.ServiceKey.Reveal() == "" {
		return nil, errors.New("exposure: SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	counts, err := o.Store.SyncedCounts(ctx, o.DB)
	if err != nil {
		return nil, fmt.Errorf("exposure: count synced rows through DATABASE_URL: %w", err)
	}
	url := strings.TrimRight(o.URL, "/")
	var out []Finding
	for _, table := range Synced {
		out = append(out, o.serviceSees(ctx, url, table, counts[table]))
	}
	if o.AnonKey.Reveal() == "" {
		out = append(out, Finding{Check: "anon reads public.keap_*", Status: Skip, Detail: "SUPABASE_ANON_KEY is not set"})
	} else {
		for _, table := range Synced {
			out = append(out, o.anonSees(ctx, url, table, counts[table]))
		}
	}
	for _, k := range []struct {
		role string
		key  seal.Secret
	}{{"service_role", o.ServiceKey}, {"anon", o.AnonKey}} {
		if k.key.Reveal() != "" {
			out = append(out, o.privateHidden(ctx, url, k.role, k.key))
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err // interrupted: the findings are not the API's answers
	}
	// A details line quotes what the server said; a broken or hostile one
	// might say our key back.
	for i := range out {
		for _, k := range []string{o.ServiceKey.Reveal(), o.AnonKey.Reveal()} {
			if k != "" {
				out[i].Detail = strings.ReplaceAll(out[i].Detail, k, "[redacted]")
			}
		}
	}
	return out, nil
}

func (o Options) serviceSees(ctx context.Context, url, table string, dbRows int64) Finding {
	f := Finding{Check: "service_role sees public." + table}
	_, total, err := o.read(ctx, url, o.ServiceKey, "public", table)
	switch {
	case err != nil && (apiCode(err) == "PGRST205" || apiCode(err) == "42P01"):
		f.Status, f.Detail = Fail, fmt.Sprintf("the API has no public.%s (%v): SUPABASE_URL and DATABASE_URL are different databases, or keapsync migrate has not run on this project", table, err)
	case err != nil:
		f.Status, f.Detail = Fail, fmt.Sprintf("the service role could not read it: %v", err)
	case total == dbRows:
		f.Status, f.Detail = OK, fmt.Sprintf("%d rows through the API, as in DATABASE_URL", total)
	default:
		f.Status, f.Detail = Warn, fmt.Sprintf("%d rows through the API, %d in DATABASE_URL: a sync in flight, or two different databases", total, dbRows)
	}
	return f
}

func (o Options) anonSees(ctx context.Context, url, table string, dbRows int64) Finding {
	f := Finding{Check: "anon reads public." + table}
	rows, _, err := o.read(ctx, url, o.AnonKey, "public", table)
	switch {
	case err != nil && apiCode(err) == "42501":
		f.Status, f.Detail = OK, "refused: permission denied"
	case err != nil:
		f.Status, f.Detail = Warn, fmt.Sprintf("no verdict: %v (is SUPABASE_ANON_KEY this project's anon key?)", err)
	case rows > 0:
		f.Status, f.Detail = Fail, fmt.Sprintf("the anon key reads rows of public.%s: revoke its grants and enable row level security (migration 003 does both)", table)
	case dbRows == 0:
		f.Status, f.Detail = Warn, "no rows visible, but the table is empty: run again after the first sync for a verdict"
	default:
		f.Status, f.Detail = OK, fmt.Sprintf("0 of %d rows visible (row level security)", dbRows)
	}
	return f
}

func (o Options) privateHidden(ctx context.Context, url, role string, key seal.Secret) Finding {
	f := Finding{Check: role + " reaches keapsync." + privateTable}
	_, _, err := o.read(ctx, url, key, "keapsync", privateTable)
	switch code := apiCode(err); {
	case err == nil:
		f.Status, f.Detail = Fail, "schema keapsync is served by the API: remove it from the project's exposed schemas"
	case code == "PGRST106":
		f.Status, f.Detail = OK, "schema keapsync is not exposed"
	case code == "42501":
		f.Status, f.Detail = OK, "refused: permission denied"
	default:
		f.Status, f.Detail = Warn, fmt.Sprintf("no verdict: %v", err)
	}
	return f
}

// read selects at most one row of schema.table with an exact count, and
// returns how many rows came back and the count.
func (o Options) read(ctx context.Context, url string, key seal.Secret, schema, table string) (rows int, total int64, err error) {
	client, err := supabase.NewClient(url, key.Reveal(), &supabase.ClientOptions{Schema: schema})
	if err != nil {
		return 0, 0, err
	}
	type result struct {
		body  []byte
		count int64
		err   error
	}
	done := make(chan result, 1)
	go func() {
		body, count, err := client.From(table).Select("*", "exact", false).Limit(1, "").Execute()
		done <- result{body, count, err}
	}()
	timeout, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	select {
	case <-timeout.Done():
		if err := ctx.Err(); err != nil {
			return 0, 0, err // the caller gave up, not the API
		}
		return 0, 0, fmt.Errorf("no answer within %s", o.Timeout)
	case r := <-done:
		if r.err != nil {
			return 0, 0, r.err
		}
		var list []json.RawMessage
		if err := json.Unmarshal(r.body, &list); err != nil {
			return 0, 0, fmt.Errorf("unexpected answer: %w", err)
		}
		return len(list), r.count, nil
	}
}

// apiCode is the PostgREST error code in an error from supabase-go, which
// formats them as "(code) message"; "" when there is none.
func apiCode(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if !strings.HasPrefix(s, "(") {
		return ""
	}
	code, _, ok := strings.Cut(s[1:], ")")
	if !ok {
		return ""
	}
	return code
}

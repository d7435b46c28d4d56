// Command demo runs keapsync end to end on local ports: it starts the fake
// Keap and `keapsync serve` as real processes against a fresh database,
// walks the OAuth flow step by step, prints what happens, and stops
// everything. Any failed step exits non-zero with the reason. `make demo`
// runs it; tokens are printed only as short fingerprints.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keapsync/keapsync/internal/store"
)

func main() {
	bin := flag.String("bin", "bin/keapsync", "keapsync binary")
	adminURL := flag.String("admin-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "Postgres server to create the demo database on")
	dbName := flag.String("db", "keapsync_demo", "demo database, dropped and created afresh")
	flag.Parse()
	d := &demo{bin: *bin, out: os.Stdout}
	err := d.run(*adminURL, *dbName)
	d.stopAll()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		for _, p := range d.procs {
			if p.log.Len() > 0 {
				fmt.Fprintf(os.Stderr, "\n--- last output of %s ---\n%s\n", p.name, tail(p.log.String(), 20))
			}
		}
		os.Exit(1)
	}
	fmt.Fprintln(os.Stdout, "\nDemo finished: every step passed.")
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

type demo struct {
	bin   string
	out   io.Writer
	env   []string
	procs []*proc
	step  int
	api   string
	key   string
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n[%d] "+format+"\n", append([]any{d.step}, args...)...)
}

func (d *demo) detail(format string, args ...any) {
	fmt.Fprintf(d.out, "    "+format+"\n", args...)
}

func (d *demo) run(adminURL, dbName string) error {
	ctx := context.Background()
	d.say("Preparing a fresh database %q", dbName)
	dbURL, err := store.FreshDatabase(ctx, adminURL, dbName)
	if err != nil {
		return err
	}
	apiPort, err := freePort()
	if err != nil {
		return err
	}
	fakePort, err := freePort()
	if err != nil {
		return err
	}
	d.api = "http://127.0.0.1:" + apiPort
	fake := "http://127.0.0.1:" + fakePort
	d.key = randomString(24)
	notices, err := startReceiver()
	if err != nil {
		return err
	}
	defer notices.srv.Close()
	d.env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"KEAP_CLIENT_ID=demo-client",
		"KEAP_CLIENT_SECRET="+randomString(16),
		"KEAP_REDIRECT_URI="+d.api+"/oauth/callback",
		"KEAP_AUTH_URL="+fake+"/app/oauth/authorize",
		"KEAP_TOKEN_URL="+fake+"/token",
		"KEAP_API_URL="+fake+"/crm/rest",
		"TOKEN_ENCRYPTION_KEYS=demo:"+base64.StdEncoding.EncodeToString(randomBytes(32)),
		"INTERNAL_API_KEY="+d.key,
		"LISTEN_ADDR=127.0.0.1:"+apiPort,
		"PUBLIC_BASE_URL="+d.api,
		"EVENTS_WEBHOOK_URL="+notices.url,
		"EVENTS_WEBHOOK_SECRET="+notices.secret,
		"LOG_FORMAT=text",
	)

	d.say("keapsync migrate")
	out, err := d.command("migrate")
	if err != nil {
		return fmt.Errorf("migrate: %w\n%s", err, out)
	}
	d.detail("%s", strings.ReplaceAll(strings.TrimSpace(lastLine(out)), "\n", "\n    "))

	d.say("Starting the fake Keap on %s", fake)
	if err := d.start("fake-keap", "fake-keap", "--addr", "127.0.0.1:"+fakePort); err != nil {
		return err
	}
	if err := waitHTTP(fake+"/app/oauth/authorize", 10*time.Second, func(int) bool { return true }); err != nil {
		return fmt.Errorf("fake keap did not start: %w", err)
	}

	d.say("Starting keapsync serve on %s", d.api)
	if err := d.start("keapsync serve", "serve"); err != nil {
		return err
	}
	if err := waitHTTP(d.api+"/readyz", 20*time.Second, func(s int) bool { return s == 200 }); err != nil {
		return fmt.Errorf("keapsync serve did not become ready: %w", err)
	}
	d.detail("GET /readyz -> 200")

	const account = "demo-acme"
	d.say("POST /oauth/initiate {\"keap_account_id\":%q}", account)
	var init struct {
		URL       string `json:"authorization_url"`
		State     string `json:"state"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := d.call("POST", "/oauth/initiate", `{"keap_account_id":"`+account+`"}`, 201, &init); err != nil {
		return err
	}
	d.detail("authorization_url: %s", redactQuery(init.URL, "state"))
	d.detail("state expires at:  %s", init.ExpiresAt)

	d.say("Following the authorization URL (the fake Keap approves at once)")
	loc, err := redirectOf(init.URL)
	if err != nil {
		return err
	}
	cb, err := url.Parse(loc)
	if err != nil {
		return err
	}
	if cb.Query().Get("state") != init.State {
		return errors.New("keap redirected with a different state")
	}
	d.detail("302 -> %s%s with code=%s state=<same> scope=%s", cb.Host, cb.Path, fingerprint(cb.Query().Get("code")), cb.Query().Get("scope"))

	d.say("GET /oauth/callback (browser lands back; keapsync checks the state, exchanges the code, stores the tokens)")
	resp, err := http.Get(loc)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("callback answered %d: %s", resp.StatusCode, body)
	}
	d.detail("200: %s", "Keap account connected")
	if err := d.expect(notices, "account.connected"); err != nil {
		return err
	}

	var first, refreshed, again tokenResponse
	d.say("GET /oauth/token/%s", account)
	if err := d.call("GET", "/oauth/token/"+account, "", 200, &first); err != nil {
		return err
	}
	d.detail("access token %s, expires at %s", fingerprint(first.AccessToken), first.ExpiresAt)

	d.say("POST /oauth/refresh/%s (force one refresh: Keap rotates both tokens)", account)
	if err := d.call("POST", "/oauth/refresh/"+account, "", 200, &refreshed); err != nil {
		return err
	}
	d.detail("new access token %s", fingerprint(refreshed.AccessToken))
	if refreshed.AccessToken == first.AccessToken {
		return errors.New("refresh returned the same access token")
	}

	d.say("GET /oauth/token/%s again", account)
	if err := d.call("GET", "/oauth/token/"+account, "", 200, &again); err != nil {
		return err
	}
	if again.AccessToken != refreshed.AccessToken {
		return fmt.Errorf("token after refresh is %s, want the rotated %s", fingerprint(again.AccessToken), fingerprint(refreshed.AccessToken))
	}
	d.detail("access token %s: the rotated pair's new token", fingerprint(again.AccessToken))

	d.say("GET /oauth/accounts/%s", account)
	var status struct {
		Account map[string]any   `json:"account"`
		Events  []map[string]any `json:"events"`
	}
	if err := d.call("GET", "/oauth/accounts/"+account, "", 200, &status); err != nil {
		return err
	}
	a := status.Account
	d.detail("status=%v health=%v tenant=%v version=%v", a["status"], a["health"], a["tenant"], a["version"])
	d.detail("next refresh at %v (%v)", a["next_refresh_at"], a["next_refresh_state"])
	var kinds []string
	for _, e := range status.Events {
		kinds = append(kinds, fmt.Sprint(e["kind"]))
	}
	d.detail("audit trail (newest first): %s", strings.Join(kinds, ", "))
	if a["health"] != "ok" {
		return fmt.Errorf("account health is %v, want ok", a["health"])
	}

	d.say("keapsync accounts (the ops view)")
	out, err = d.command("accounts")
	if err != nil {
		return fmt.Errorf("accounts: %w\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		d.detail("%s", line)
	}

	if err := d.contactLifecycle(ctx, dbURL, fake, account); err != nil {
		return err
	}

	d.say("DELETE /oauth/accounts/%s (disconnect: hooks deleted at Keap, ciphertexts destroyed)", account)
	if err := d.call("DELETE", "/oauth/accounts/"+account, "", 200, nil); err != nil {
		return err
	}
	if err := d.call("GET", "/oauth/token/"+account, "", 404, nil); err != nil {
		return err
	}
	d.detail("GET /oauth/token/%s -> 404: no token is left to hand out", account)
	if err := d.expect(notices, "account.disconnected"); err != nil {
		return err
	}

	d.say("Stopping keapsync and the fake Keap")
	return nil
}

// contactLifecycle subscribes REST hooks, then creates, edits and deletes a
// contact in the fake Keap, and follows each change into public.keap_contacts.
func (d *demo) contactLifecycle(ctx context.Context, dbURL, fake, account string) error {
	d.say("POST /hooks/%s (Keap verifies our receiver while each hook is created)", account)
	var subs struct {
		Subscriptions []struct {
			Key      string `json:"key"`
			EventKey string `json:"event_key"`
			Status   string `json:"status"`
		} `json:"subscriptions"`
	}
	if err := d.call("POST", "/hooks/"+account, `{"events":["contact.add","contact.edit","contact.delete"]}`, 201, &subs); err != nil {
		return err
	}
	for _, s := range subs.Subscriptions {
		d.detail("hook %s %-15s %s", s.Key, s.EventKey, s.Status)
		if s.Status != "Verified" {
			return fmt.Errorf("hook for %s is %s, want Verified", s.EventKey, s.Status)
		}
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)

	d.say("Creating a contact in the fake Keap, then letting Keap deliver the hook")
	var created struct {
		ID int64 `json:"id"`
	}
	if err := fakeCall(fake, "POST", "/_fake/contacts", `{"given_name":"Ada","family_name":"Lovelace","email_addresses":[{"email":"ada@example.com","field":"EMAIL1"}]}`, &created); err != nil {
		return err
	}
	d.detail("contact %d created; delivering contact.add", created.ID)
	if err := d.deliverAndWait(ctx, conn, fake, account, created.ID, func(c contactRow) bool { return c.GivenName == "Ada" }); err != nil {
		return err
	}

	d.say("Editing the contact in the fake Keap")
	if err := fakeCall(fake, "POST", "/_fake/contacts", fmt.Sprintf(`{"id":%d,"given_name":"Ada K."}`, created.ID), nil); err != nil {
		return err
	}
	if err := d.deliverAndWait(ctx, conn, fake, account, created.ID, func(c contactRow) bool { return c.GivenName == "Ada K." }); err != nil {
		return err
	}

	d.say("Deleting the contact in the fake Keap")
	if err := fakeCall(fake, "DELETE", fmt.Sprintf("/_fake/contacts/%d", created.ID), "", nil); err != nil {
		return err
	}
	return d.deliverAndWait(ctx, conn, fake, account, created.ID, func(c contactRow) bool { return c.DeletedAt != nil })
}

type contactRow struct {
	GivenName, Email string
	UpdatedAt        *time.Time
	DeletedAt        *time.Time
}

func (d *demo) deliverAndWait(ctx context.Context, conn *pgx.Conn, fake, account string, id int64, done func(contactRow) bool) error {
	var res struct {
		Posts int `json:"posts"`
	}
	if err := fakeCall(fake, "POST", "/_fake/deliver", "", &res); err != nil {
		return err
	}
	d.detail("keap POSTed %d delivery to /webhooks/keap/%s/<secret>", res.Posts, account)
	deadline := time.Now().Add(15 * time.Second)
	var c contactRow
	for time.Now().Before(deadline) {
		err := conn.QueryRow(ctx, `SELECT coalesce(given_name, ''), coalesce(email, ''), keap_updated_at, deleted_at
			FROM public.keap_contacts WHERE account_id = $1 AND keap_id = $2`, account, id).Scan(&c.GivenName, &c.Email, &c.UpdatedAt, &c.DeletedAt)
		if err == nil && done(c) {
			deleted := "-"
			if c.DeletedAt != nil {
				deleted = c.DeletedAt.UTC().Format(time.RFC3339)
			}
			d.detail("public.keap_contacts: keap_id=%d given_name=%q email=%q keap_updated_at=%s deleted_at=%s",
				id, c.GivenName, c.Email, c.UpdatedAt.UTC().Format(time.RFC3339Nano), deleted)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("contact %d did not reach public.keap_contacts in the expected state within 15 s (last seen: %+v)", id, c)
}

func fakeCall(base, method, path, body string, out any) error {
	return doJSON(method, base+path, "", body, func(status int) bool { return status < 300 }, out)
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
}

func (d *demo) call(method, path, body string, want int, out any) error {
	return doJSON(method, d.api+path, d.key, body, func(status int) bool { return status == want }, out)
}

// doJSON sends body (JSON, or nothing) with an optional bearer key and
// decodes the answer into out when ok accepts its status.
func doJSON(method, url, key, body string, ok func(int) bool, out any) error {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if !ok(resp.StatusCode) {
		return fmt.Errorf("%s %s answered %d: %s", method, req.URL.Path, resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

func (d *demo) command(args ...string) (string, error) {
	cmd := exec.Command(d.bin, args...)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *demo) start(name string, args ...string) error {
	p := &proc{name: name, log: &bytes.Buffer{}}
	p.cmd = exec.Command(d.bin, args...)
	p.cmd.Env = d.env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, p)
	return nil
}

// stopAll sends SIGTERM (graceful shutdown) and waits, newest first.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(d.out, "    %s exited: %v\n", p.name, err)
			} else {
				fmt.Fprintf(d.out, "    %s stopped cleanly\n", p.name)
			}
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			fmt.Fprintf(d.out, "    %s killed after 20 s\n", p.name)
		}
	}
	d.procs = nil
}

func waitHTTP(u string, limit time.Duration, ok func(int) bool) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(u)
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return nil
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func redirectOf(u string) (string, error) {
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(u)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return "", fmt.Errorf("authorize answered %d, want 302", resp.StatusCode)
	}
	return resp.Header.Get("Location"), nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// fingerprint names a secret without revealing it.
func fingerprint(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(h[:4])
}

func redactQuery(raw, key string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	q := u.Query()
	if q.Has(key) {
		q.Set(key, "HIDDEN")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomString(n int) string { return base64.RawURLEncoding.EncodeToString(randomBytes(n)) }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 3 {
		return fmt.Sprintf("%d migrations applied, last: %s", len(lines), lines[len(lines)-1])
	}
	return strings.Join(lines, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

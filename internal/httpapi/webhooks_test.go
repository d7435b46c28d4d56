package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/keaptest"
)

type hookBundle struct {
	bundle
	url string // this account's receiver URL
}

func setupHooks(t *testing.T) hookBundle {
	t.Helper()
	h := keaptest.New(t, keaptest.Options{})
	h.Serve()
	h.Connect("acme")
	_, err := h.Hooks.Subscribe(ctx, "acme", []string{"contact.add", "contact.edit"})
	require.NoError(t, err)
	url, err := h.Hooks.Endpoint(ctx, "acme")
	require.NoError(t, err)
	return hookBundle{bundle: bundle{h: h, url: h.APIURL}, url: url}
}

func (b hookBundle) post(t *testing.T, url, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	require.NotEqual(t, http.StatusInternalServerError, r.Status, r.Raw)
	return r
}

func (b hookBundle) inboxRows(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.h.Pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM keapsync.webhook_events) + (SELECT count(*) FROM keapsync.river_job WHERE kind = 'process_webhook_event')").Scan(&n))
	return n
}

func TestWebhookHandshakeEchoes(t *testing.T) {
	t.Parallel()
	b := setupHooks(t)
	r := b.post(t, b.url, "", "X-Hook-Secret", "s3cr3t-from-keap")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.Equal(t, "s3cr3t-from-keap", r.Header.Get("X-Hook-Secret"))
	require.Zero(t, b.inboxRows(t), "a handshake enqueues nothing")
	// Also with a body, as Keap may send one.
	r = b.post(t, b.url, `{"event_key":"contact.add","object_keys":[{"id":1}]}`, "X-Hook-Secret", "again")
	require.Equal(t, "again", r.Header.Get("X-Hook-Secret"))
	require.Zero(t, b.inboxRows(t))
}

func TestWebhookDelivery(t *testing.T) {
	t.Parallel()
	b := setupHooks(t)
	body, err := os.ReadFile("../../testdata/keap/hook_delivery_contact_add.json")
	require.NoError(t, err)
	require.Contains(t, string(body), `"api_url"`, "the fixture carries an extra top-level field")
	r := b.post(t, b.url, string(body), "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.EqualValues(t, 4, r.Body["accepted"])
	require.Equal(t, 8, b.inboxRows(t))

	r = b.post(t, b.url, string(body))
	require.Equal(t, http.StatusOK, r.Status, "a replay is still acknowledged")
	require.EqualValues(t, 0, r.Body["accepted"])
	require.EqualValues(t, 4, r.Body["duplicates"])
	require.Equal(t, 8, b.inboxRows(t))

	parts := make([]string, 1000)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"apiUrl":"","id":%d,"timestamp":"2026-03-30T08:01:12Z"}`, 10000+i)
	}
	r = b.post(t, b.url, `{"event_key":"contact.edit","object_type":"contact","object_keys":[`+strings.Join(parts, ",")+`]}`)
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.EqualValues(t, 1000, r.Body["accepted"])
}

func TestWebhookBadInputStoresNothing(t *testing.T) {
	t.Parallel()
	b := setupHooks(t)
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id":%d}`, i+1)
	}
	secret := b.url[strings.LastIndex(b.url, "/")+1:]
	cases := []struct {
		name, url, body string
		status          int
		code            string
	}{
		{"malformed json", b.url, `{"event_key":`, 400, "invalid_json"},
		{"empty body", b.url, ``, 400, "invalid_json"},
		{"missing event key", b.url, `{"object_keys":[{"id":1}]}`, 400, "invalid_event_key"},
		{"missing object keys", b.url, `{"event_key":"contact.add"}`, 400, "invalid_object_keys"},
		{"non-integer id", b.url, `{"event_key":"contact.add","object_keys":[{"id":"12"}]}`, 400, "invalid_object_id"},
		{"fractional id", b.url, `{"event_key":"contact.add","object_keys":[{"id":1.5}]}`, 400, "invalid_object_id"},
		{"1001 objects", b.url, `{"event_key":"contact.add","object_keys":[` + strings.Join(many, ",") + `]}`, 400, "too_many_objects"},
		{"oversized body", b.url, `{"event_key":"contact.add","pad":"` + strings.Repeat("x", 1<<20) + `","object_keys":[{"id":1}]}`, 413, "body_too_large"},
		{"unsubscribed event", b.url, `{"event_key":"order.add","object_keys":[{"id":1}]}`, 400, "event_not_subscribed"},
		{"case-shifted event", b.url, `{"event_key":"Contact.Add","object_keys":[{"id":1}]}`, 400, "event_not_subscribed"},
		{"future timestamp", b.url, `{"event_key":"contact.add","object_keys":[{"id":1,"timestamp":"9999-01-01T00:00:00Z"}]}`, 400, "invalid_timestamp"},
		{"oversized handshake", b.url, strings.Repeat("x", 1<<20+1), 413, "body_too_large"},
		{"wrong secret", b.url + "x", `{"event_key":"contact.add","object_keys":[{"id":1}]}`, 404, "not_found"},
		{"unknown account", b.h.APIURL + "/webhooks/keap/ghost/" + secret, `{"event_key":"contact.add","object_keys":[{"id":1}]}`, 404, "not_found"},
		{"bad account id", b.h.APIURL + "/webhooks/keap/a%20b/" + secret, `{}`, 404, "not_found"},
		{"missing secret", b.h.APIURL + "/webhooks/keap/acme/", `{}`, 404, "not_found"},
	}
	for _, tc := range cases {
		r := b.post(t, tc.url, tc.body)
		require.Equal(t, tc.status, r.Status, "%s: %s", tc.name, r.Raw)
		require.Equal(t, tc.code, r.Body["error"], "%s: %s", tc.name, r.Raw)
		require.NotEmpty(t, r.Body["message"], tc.name)
	}
	require.Zero(t, b.inboxRows(t))
	// A wrong secret and an unknown account are indistinguishable.
	wrong := b.post(t, b.url+"x", `{}`)
	ghost := b.post(t, b.h.APIURL+"/webhooks/keap/ghost/"+secret, `{}`)
	require.Equal(t, wrong.Raw, ghost.Raw)
	// The secret never reaches the logs.
	require.NotContains(t, b.h.Logs.String(), secret)
}

// TestWebhookOddKeysAreStoredSafely: whatever else a key carries, only its
// id, timestamp and apiUrl are stored, so nothing in it can fail the insert.
func TestWebhookOddKeysAreStoredSafely(t *testing.T) {
	t.Parallel()
	b := setupHooks(t)
	for i, extra := range []string{`"x":"\ud800"`, `"n":1e999999999`, `"apiUrl":"a\u0000b"`, `"deep":[[[[[[[[1]]]]]]]]`, `"ID":5`} {
		r := b.post(t, b.url, fmt.Sprintf(`{"event_key":"contact.add","object_keys":[{"id":%d,%s}]}`, 9000+i, extra))
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", extra, r.Raw)
		require.EqualValues(t, 1, r.Body["accepted"], extra)
	}
	keys := map[int64]string{}
	rows, err := b.h.Pool.Query(ctx, "SELECT object_id, object_key::text FROM keapsync.webhook_events")
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		var k string
		require.NoError(t, rows.Scan(&id, &k))
		keys[id] = k
	}
	require.Len(t, keys, 5)
	require.Equal(t, `{"id": 9000, "apiUrl": ""}`, keys[9000])
	require.Equal(t, `{"id": 9002, "apiUrl": "ab"}`, keys[9002])
	// Go's JSON decoding matches field names case-insensitively and the last
	// one wins: the stored key carries the id that was used.
	require.Equal(t, `{"id": 5, "apiUrl": ""}`, keys[5])
}

func TestHookManagementOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupHooks(t)
	auth := "Bearer " + keaptest.APIKey
	r := b.do(t, "POST", "/hooks/acme", auth, `{"events":["contact.add","contact.delete"]}`)
	require.Equal(t, http.StatusCreated, r.Status, r.Raw)
	subs := r.Body["subscriptions"].([]any)
	require.Len(t, subs, 3, "contact.edit from setup plus contact.delete")
	require.Equal(t, "Verified", subs[0].(map[string]any)["status"])
	require.NotContains(t, r.Raw, "/webhooks/keap/", "the hook URL (with its secret) is not echoed")

	r = b.do(t, "GET", "/hooks/acme", auth, "")
	require.Equal(t, http.StatusOK, r.Status)
	require.Len(t, r.Body["subscriptions"].([]any), 3)
	requireError(t, b.do(t, "GET", "/hooks/ghost", auth, ""), 404, "account_not_found")
	requireError(t, b.do(t, "DELETE", "/hooks/ghost", auth, ""), 404, "account_not_found")

	requireError(t, b.do(t, "POST", "/hooks/acme", auth, `{"events":["not an event"]}`), 400, "invalid_event_key")
	requireError(t, b.do(t, "POST", "/hooks/acme", auth, `{"events":`), 400, "invalid_json")
	requireError(t, b.do(t, "POST", "/hooks/acme", "", ``), 401, "unauthorized")
	requireError(t, b.do(t, "POST", "/hooks/ghost", auth, ``), 404, "account_not_found")
	requireError(t, b.do(t, "POST", "/hooks/acme", auth, `{"events":["contact.nonsense"]}`), 400, "unknown_event_key")
	// A valid key next to an unknown one creates nothing.
	before := len(b.h.Fake.Hooks())
	requireError(t, b.do(t, "POST", "/hooks/acme", auth, `{"events":["note.add","contact.nonsense"]}`), 400, "unknown_event_key")
	require.Len(t, b.h.Fake.Hooks(), before)

	r = b.do(t, "DELETE", "/hooks/acme", auth, "")
	require.Equal(t, http.StatusOK, r.Status)
	require.EqualValues(t, 3, r.Body["removed"])
	require.Empty(t, b.h.Fake.Hooks())

	// An empty body, even sent chunked, means the default events.
	r = b.raw(t, "POST /hooks/acme HTTP/1.1\r\nHost: x\r\nAuthorization: "+auth+
		"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
	require.Equal(t, http.StatusCreated, r.Status, r.Raw)
	require.Len(t, r.Body["subscriptions"].([]any), len(hooks.DefaultEvents))
}

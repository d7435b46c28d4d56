// Package inbox is the durable side of Keap's REST hooks: it parses a
// delivery, stores one row per object key together with one River job per
// row in a single transaction (Keap gets its 2xx only after the commit), and
// processes each row by fetching the object from Keap, never trusting the
// delivery body beyond its ids.
package inbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/keapsync/keapsync/internal/keap"
)

// MaxObjects is the most object keys Keap puts in one delivery.
const MaxObjects = 1000

// Delivery is a parsed REST hook delivery.
type Delivery struct {
	EventKey   string
	ObjectType string
	Objects    []ObjectKey
}

// ObjectKey is one changed object: its id, when it changed (nil when Keap
// sent no timestamp) and the key as keapsync stores it: re-encoded from the
// fields Keap documents (id, timestamp, apiUrl), never the raw bytes, so
// nothing a sender adds reaches the database and nothing in it can fail to
// store.
type ObjectKey struct {
	ID        int64
	Timestamp *time.Time
	Raw       json.RawMessage
}

// maxFuture is how far ahead of our clock a timestamp may be: a key dated
// years ahead would otherwise shadow every later change of that object.
const maxFuture = 24 * time.Hour

// ParseError is a delivery keapsync refuses, with a stable code.
type ParseError struct {
	Code    string
	Message string
}

func (e *ParseError) Error() string { return e.Code + ": " + e.Message }

func bad(code, msg string) error { return &ParseError{Code: code, Message: msg} }

// Parse checks a delivery body: a JSON object with an event_key and 1 to
// 1,000 object_keys, each with a positive integer id and, when present, an
// RFC 3339 timestamp. Unknown fields are ignored.
func Parse(body []byte) (Delivery, error) {
	var raw *struct { // a pointer, so that a body of null stays nil
		EventKey   json.RawMessage   `json:"event_key"`
		ObjectType json.RawMessage   `json:"object_type"`
		ObjectKeys []json.RawMessage `json:"object_keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field == "object_keys" {
			return Delivery{}, bad("invalid_object_keys", "object_keys must be an array of objects")
		}
		return Delivery{}, bad("invalid_json", "body must be a JSON object")
	}
	// Token, not More: More reports false before a stray "]" or "}", so
	// `{...}}garbage` would pass.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Delivery{}, bad("invalid_json", "body must hold one JSON object")
	}
	var d Delivery
	if err := json.Unmarshal(raw.EventKey, &d.EventKey); err != nil || !keap.EventKeyPattern.MatchString(d.EventKey) || len(d.EventKey) > 64 {
		return Delivery{}, bad("invalid_event_key", "event_key must be a string such as contact.add")
	}
	d.ObjectType = d.EventKey[:strings.LastIndex(d.EventKey, ".")]
	switch n := len(raw.ObjectKeys); {
	case raw.ObjectKeys == nil || n == 0:
		return Delivery{}, bad("invalid_object_keys", "object_keys must hold at least one object key")
	case n > MaxObjects:
		return Delivery{}, bad("too_many_objects", "object_keys holds "+strconv.Itoa(n)+" keys; at most 1000 are allowed")
	}
	d.Objects = make([]ObjectKey, 0, len(raw.ObjectKeys))
	now := time.Now()
	for i, rk := range raw.ObjectKeys {
		k, err := parseKey(rk, now)
		if err != nil {
			return Delivery{}, bad(err.Code, "object_keys["+strconv.Itoa(i)+"]: "+err.Message)
		}
		d.Objects = append(d.Objects, k)
	}
	return d, nil
}

func parseKey(raw json.RawMessage, now time.Time) (ObjectKey, *ParseError) {
	var k struct {
		ID        json.RawMessage `json:"id"`
		Timestamp json.RawMessage `json:"timestamp"`
		APIURL    json.RawMessage `json:"apiUrl"`
	}
	if err := json.Unmarshal(raw, &k); err != nil || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return ObjectKey{}, &ParseError{"invalid_object_keys", "must be an object"}
	}
	id, err := strconv.ParseInt(string(k.ID), 10, 64)
	if err != nil || id <= 0 {
		return ObjectKey{}, &ParseError{"invalid_object_id", "id must be a positive integer"}
	}
	stored := struct {
		ID        int64  `json:"id"`
		Timestamp string `json:"timestamp,omitempty"`
		APIURL    string `json:"apiUrl"`
	}{ID: id}
	out := ObjectKey{ID: id}
	if len(k.Timestamp) > 0 && string(k.Timestamp) != "null" {
		var s string
		if err := json.Unmarshal(k.Timestamp, &s); err != nil {
			return ObjectKey{}, &ParseError{"invalid_timestamp", "timestamp must be an RFC 3339 string"}
		}
		t, err := ParseTime(s)
		if err != nil || t.After(now.Add(maxFuture)) {
			return ObjectKey{}, &ParseError{"invalid_timestamp", "timestamp must be an RFC 3339 time, not in the future"}
		}
		out.Timestamp = &t
		stored.Timestamp = t.Format(time.RFC3339Nano)
	}
	var api string
	if json.Unmarshal(k.APIURL, &api) == nil && len(api) <= 2048 {
		stored.APIURL = strings.ToValidUTF8(strings.ReplaceAll(api, "\x00", ""), "\uFFFD")
	}
	out.Raw, _ = json.Marshal(stored)
	return out, nil
}

// ParseTime reads the time formats Keap uses: RFC 3339 in hook deliveries
// and "2006-01-02T15:04:05.000-0700" in v1 objects.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("unrecognised time")
}

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
// sent no timestamp) and the raw JSON of the key as Keap sent it.
type ObjectKey struct {
	ID        int64
	Timestamp *time.Time
	Raw       json.RawMessage
}

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
	var raw struct {
		EventKey   json.RawMessage   `json:"event_key"`
		ObjectType json.RawMessage   `json:"object_type"`
		ObjectKeys []json.RawMessage `json:"object_keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field == "object_keys" {
			return Delivery{}, bad("invalid_object_keys", "object_keys must be an array of objects")
		}
		return Delivery{}, bad("invalid_json", "body must be a JSON object")
	}
	if dec.More() {
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
	for i, rk := range raw.ObjectKeys {
		k, err := parseKey(rk)
		if err != nil {
			return Delivery{}, bad(err.Code, "object_keys["+strconv.Itoa(i)+"]: "+err.Message)
		}
		d.Objects = append(d.Objects, k)
	}
	return d, nil
}

func parseKey(raw json.RawMessage) (ObjectKey, *ParseError) {
	var k struct {
		ID        json.RawMessage `json:"id"`
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if err := json.Unmarshal(raw, &k); err != nil || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return ObjectKey{}, &ParseError{"invalid_object_keys", "must be an object"}
	}
	id, err := strconv.ParseInt(string(k.ID), 10, 64)
	if err != nil || id <= 0 {
		return ObjectKey{}, &ParseError{"invalid_object_id", "id must be a positive integer"}
	}
	out := ObjectKey{ID: id, Raw: compact(raw)}
	if len(k.Timestamp) > 0 && string(k.Timestamp) != "null" {
		var s string
		if err := json.Unmarshal(k.Timestamp, &s); err != nil {
			return ObjectKey{}, &ParseError{"invalid_timestamp", "timestamp must be an RFC 3339 string"}
		}
		t, err := ParseTime(s)
		if err != nil {
			return ObjectKey{}, &ParseError{"invalid_timestamp", "timestamp must be an RFC 3339 string"}
		}
		out.Timestamp = &t
	}
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

// compact removes insignificant space and replaces \u0000, which Postgres'
// jsonb refuses, so an odd key cannot fail the whole delivery.
func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	out := b.Bytes()
	for _, nul := range [][]byte{[]byte(`\u0000`)} {
		out = bytes.ReplaceAll(out, nul, []byte(`\ufffd`))
	}
	return out
}

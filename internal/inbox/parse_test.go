package inbox_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/inbox"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/keap/" + name)
	require.NoError(t, err)
	return b
}

func TestParseFixture(t *testing.T) {
	t.Parallel()
	d, err := inbox.Parse(fixture(t, "hook_delivery_contact_add.json"))
	require.NoError(t, err)
	require.Equal(t, "contact.add", d.EventKey)
	require.Equal(t, "contact", d.ObjectType)
	require.Len(t, d.Objects, 4)
	require.EqualValues(t, 2041, d.Objects[0].ID)
	require.Equal(t, "2026-03-29T10:55:37Z", d.Objects[0].Timestamp.Format("2006-01-02T15:04:05Z07:00"))
	require.JSONEq(t, `{"apiUrl":"","id":2041,"timestamp":"2026-03-29T10:55:37Z"}`, string(d.Objects[0].Raw))

	d, err = inbox.Parse([]byte(`{"event_key":"invoice.payment.add","object_keys":[{"id":7}],"surprise":{"x":1}}`))
	require.NoError(t, err)
	require.Equal(t, "invoice.payment", d.ObjectType)
	require.Nil(t, d.Objects[0].Timestamp)
}

func keys(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"id":%d,"timestamp":"2026-03-29T10:55:37Z"}`, i+1)
	}
	return `{"event_key":"contact.edit","object_keys":[` + strings.Join(parts, ",") + `]}`
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ body, code string }{
		"not json":          {`{"event_key":`, "invalid_json"},
		"array":             {`[1,2]`, "invalid_json"},
		"null":              {`null`, "invalid_json"},
		"two objects":       {`{"event_key":"contact.add","object_keys":[{"id":1}]} {}`, "invalid_json"},
		"stray brace":       {`{"event_key":"contact.add","object_keys":[{"id":1}]}}}garbage`, "invalid_json"},
		"stray bracket":     {"{\"event_key\":\"contact.add\",\"object_keys\":[{\"id\":1}]}]\x00\xff", "invalid_json"},
		"missing event key": {`{"object_keys":[{"id":1}]}`, "invalid_event_key"},
		"numeric event key": {`{"event_key":5,"object_keys":[{"id":1}]}`, "invalid_event_key"},
		"odd event key":     {`{"event_key":"contact add","object_keys":[{"id":1}]}`, "invalid_event_key"},
		"no dot":            {`{"event_key":"contact","object_keys":[{"id":1}]}`, "invalid_event_key"},
		"missing keys":      {`{"event_key":"contact.add"}`, "invalid_object_keys"},
		"empty keys":        {`{"event_key":"contact.add","object_keys":[]}`, "invalid_object_keys"},
		"keys not array":    {`{"event_key":"contact.add","object_keys":{"id":1}}`, "invalid_object_keys"},
		"key not object":    {`{"event_key":"contact.add","object_keys":[1]}`, "invalid_object_keys"},
		"string id":         {`{"event_key":"contact.add","object_keys":[{"id":"2041"}]}`, "invalid_object_id"},
		"float id":          {`{"event_key":"contact.add","object_keys":[{"id":2041.5}]}`, "invalid_object_id"},
		"exponent id":       {`{"event_key":"contact.add","object_keys":[{"id":2e3}]}`, "invalid_object_id"},
		"negative id":       {`{"event_key":"contact.add","object_keys":[{"id":-1}]}`, "invalid_object_id"},
		"missing id":        {`{"event_key":"contact.add","object_keys":[{"apiUrl":""}]}`, "invalid_object_id"},
		"huge id":           {`{"event_key":"contact.add","object_keys":[{"id":99999999999999999999}]}`, "invalid_object_id"},
		"bad timestamp":     {`{"event_key":"contact.add","object_keys":[{"id":1,"timestamp":"yesterday"}]}`, "invalid_timestamp"},
		"numeric timestamp": {`{"event_key":"contact.add","object_keys":[{"id":1,"timestamp":12}]}`, "invalid_timestamp"},
		"1001 objects":      {keys(1001), "too_many_objects"},
	}
	for name, tc := range cases {
		_, err := inbox.Parse([]byte(tc.body))
		var pe *inbox.ParseError
		require.ErrorAs(t, err, &pe, name)
		require.Equal(t, tc.code, pe.Code, name)
		require.NotEmpty(t, pe.Error())
	}
	d, err := inbox.Parse([]byte(keys(1000)))
	require.NoError(t, err)
	require.Len(t, d.Objects, 1000)
}

func TestParseTimeFormats(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"2026-03-29T10:55:37Z", "2026-03-29T10:55:37.123+02:00", "2026-03-29T10:55:37.000+0000"} {
		_, err := inbox.ParseTime(s)
		require.NoError(t, err, s)
	}
}

// FuzzParse: any input either parses into something self-consistent or is
// refused with a ParseError; never a panic, never an unexpected error type.
func FuzzParse(f *testing.F) {
	f.Add(fixture(f, "hook_delivery_contact_add.json"))
	f.Add(fixture(f, "hook_delivery_contact_delete.json"))
	f.Add([]byte(`{"event_key":"contact.add","object_keys":[{"id":1,"x":"\u0000"}]}`))
	f.Add([]byte(`{"event_key":"a.b","object_keys":[{"id":0}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"event_key":"contact.add","object_keys":[{"id":1}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := inbox.Parse(body)
		if err != nil {
			var pe *inbox.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		if d.EventKey == "" || d.ObjectType == "" || len(d.Objects) == 0 || len(d.Objects) > inbox.MaxObjects {
			t.Fatalf("accepted an inconsistent delivery: %+v", d)
		}
		for _, o := range d.Objects {
			if o.ID <= 0 || !json.Valid(o.Raw) || strings.Contains(string(o.Raw), `\u0000`) {
				t.Fatalf("accepted a bad object key: %+v", o)
			}
		}
	})
}

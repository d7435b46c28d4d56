package seal_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/seal"
)

const (
	keyA = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	keyB = "Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA="
)

func TestSealOpenRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	ring, err := seal.ParseKeyring("a:" + keyA)
	require.NoError(t, err)
	id, ct, err := ring.Seal("acme", "refresh_token", []byte("kRt-secret-value"))
	require.NoError(t, err)
	require.Equal(t, "a", id)
	require.NotContains(t, string(ct), "kRt-secret-value")

	pt, err := ring.Open(id, "acme", "refresh_token", ct)
	require.NoError(t, err)
	require.Equal(t, "kRt-secret-value", string(pt))

	// Bound to its account and its field.
	_, err = ring.Open(id, "other", "refresh_token", ct)
	require.ErrorIs(t, err, seal.ErrOpen)
	_, err = ring.Open(id, "acme", "access_token", ct)
	require.ErrorIs(t, err, seal.ErrOpen)
	// Tampering and truncation fail.
	bad := append([]byte{}, ct...)
	bad[len(bad)-1] ^= 1
	_, err = ring.Open(id, "acme", "refresh_token", bad)
	require.ErrorIs(t, err, seal.ErrOpen)
	_, err = ring.Open(id, "acme", "refresh_token", ct[:5])
	require.ErrorIs(t, err, seal.ErrOpen)
	_, err = ring.Open("zz", "acme", "refresh_token", ct)
	require.ErrorContains(t, err, "unknown key id")

	// Two seals of one value differ (fresh nonce).
	_, ct2, err := ring.Seal("acme", "refresh_token", []byte("kRt-secret-value"))
	require.NoError(t, err)
	require.NotEqual(t, ct, ct2)
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	old, err := seal.ParseKeyring("old:" + keyA)
	require.NoError(t, err)
	id, ct, err := old.Seal("acme", "access_token", []byte("tok"))
	require.NoError(t, err)

	rotated, err := seal.ParseKeyring("new:" + keyB + ",old:" + keyA)
	require.NoError(t, err)
	require.Equal(t, "new", rotated.ActiveKeyID())
	pt, err := rotated.Open(id, "acme", "access_token", ct)
	require.NoError(t, err, "old ciphertexts open after rotation")
	require.Equal(t, "tok", string(pt))
	newID, _, err := rotated.Seal("acme", "access_token", []byte("tok"))
	require.NoError(t, err)
	require.Equal(t, "new", newID)
}

func TestParseKeyringErrors(t *testing.T) {
	t.Parallel()
	for spec, want := range map[string]string{
		"":                                  "no keys",
		"nokey":                             "key 1",
		"a:notbase64!!":                     `key "a"`,
		"a:" + keyA[:20]:                    `key "a": want 32 bytes`,
		"a:" + keyA + ",a:" + keyB:          "listed twice",
		"bad id:" + keyA:                    "key 1",
		"a:" + strings.TrimRight(keyA, "="): "", // unpadded is fine
	} {
		_, err := seal.ParseKeyring(spec)
		if want == "" {
			require.NoError(t, err, spec)
			continue
		}
		require.ErrorContains(t, err, want, spec)
		require.NotContains(t, err.Error(), keyA[:20], "errors never echo key material")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	s := seal.Secret("kAt0aB1cD2eF3gH4")
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "token", s, "struct", struct{ T seal.Secret }{s})
	b, err := json.Marshal(map[string]any{"t": s})
	require.NoError(t, err)
	out := buf.String() + string(b) + fmt.Sprintf("%v %s %q %+v %#v", s, s, s, s, s)
	require.NotContains(t, out, "kAt0aB1cD2eF3gH4")
	require.Equal(t, "kAt0aB1cD2eF3gH4", s.Reveal())
}

// Package seal encrypts tokens before they reach Postgres: AES-256-GCM with a
// key ring, where the first key seals and every key opens, and the additional
// data binds each ciphertext to its account and field, so a ciphertext copied
// onto another row or column fails to open instead of handing out the wrong
// tenant's token.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// ErrOpen is returned when a ciphertext does not open: wrong key, wrong
// account or field, or tampering. It deliberately says no more.
var ErrOpen = errors.New("seal: ciphertext does not open")

var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Keyring holds the AEADs by key id; Active seals.
type Keyring struct {
	active string
	aeads  map[string]cipher.AEAD
}

// ParseKeyring reads TOKEN_ENCRYPTION_KEYS: "id:base64-32-bytes[,id:key...]",
// the first key active. Standard or URL base64, padded or not, is accepted.
// Errors name the key id at fault, never the key material.
func ParseKeyring(spec string) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("no keys: want id:base64-32-bytes[,id:key...]")
	}
	for i, part := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !keyIDPattern.MatchString(id) {
			return nil, fmt.Errorf("key %d: want id:base64 with id matching %s", i+1, keyIDPattern)
		}
		raw, err := decodeKey(b64)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("key %q: want 32 bytes of base64", id)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("key %q: listed twice", id)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		k.aeads[id] = aead
		if i == 0 {
			k.active = id
		}
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// ActiveKeyID names the key new ciphertexts are sealed with.
func (k *Keyring) ActiveKeyID() string { return k.active }

// aad binds a ciphertext to where it is stored. The format version leads so
// the binding can change later without ambiguity.
func aad(accountID, field string) []byte {
	return []byte("keapsync/v1\x00" + accountID + "\x00" + field)
}

// Seal encrypts plaintext for accountID's field with the active key and
// returns the key id with nonce||ciphertext.
func (k *Keyring) Seal(accountID, field string, plaintext []byte) (string, []byte, error) {
	aead := k.aeads[k.active]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return k.active, aead.Seal(nonce, nonce, plaintext, aad(accountID, field)), nil
}

// Open decrypts a ciphertext sealed by Seal for the same account and field.
// Any mismatch gives ErrOpen; an unknown key id says so (the ring lost a key).
func (k *Keyring) Open(keyID, accountID, field string, ct []byte) ([]byte, error) {
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("seal: unknown key id %q", keyID)
	}
	if len(ct) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], aad(accountID, field))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Secret is a string that never prints: String, LogValue, GoString and
// MarshalJSON all redact, so a token can travel through structs that get
// logged or encoded without leaking. Reveal returns the value on purpose.
type Secret string

const redacted = "[REDACTED]"

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// MarshalJSON redacts; code that must send a secret converts it explicitly.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

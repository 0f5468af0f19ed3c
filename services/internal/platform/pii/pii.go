// Package pii protects the personal identifiers MCC stores: resident ID
// numbers, names, phone numbers.
//
// Each value is kept twice: sealed (encrypted) for display, and as a keyed
// hash for lookup. Neither reveals the value without the key in the data
// directory, so a copy of the store alone discloses no patient.
package pii

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/countymcc/mcc/services/internal/platform/keyfile"
)

// Cipher seals and opens values. The additional data binds a ciphertext to
// where it is stored, so it cannot be moved to another record. AES-256-GCM is
// the default; the interface leaves room for SM4-GCM where national
// cryptography is required.
type Cipher interface {
	Seal(plaintext, additional []byte) ([]byte, error)
	Open(ciphertext, additional []byte) ([]byte, error)
}

// keyType is the PEM block type of the PII master key file.
const keyType = "MCC PII KEY"

// Protector seals identifiers and computes their lookup hashes.
type Protector struct {
	cipher   Cipher
	indexKey []byte
}

// LoadProtector reads the master key at path, creating it if create is set
// and the file is missing. Encryption and hashing use separate keys derived
// from the master key with HKDF.
func LoadProtector(path string, create bool) (*Protector, error) {
	var gen func() ([]byte, error)
	if create {
		gen = func() ([]byte, error) {
			key := make([]byte, 32)
			_, err := rand.Read(key)
			return key, err
		}
	}
	master, _, err := keyfile.LoadOrCreate(path, keyType, gen)
	if err != nil {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	return NewProtector(master)
}

// NewProtector returns a Protector whose keys are derived from master, which
// must be 32 bytes.
func NewProtector(master []byte) (*Protector, error) {
	if len(master) != 32 {
		return nil, errors.New("pii key: master key must be 32 bytes")
	}
	encKey, err := hkdf.Key(sha256.New, master, nil, "mcc pii encryption v1", 32)
	if err != nil {
		return nil, err
	}
	indexKey, err := hkdf.Key(sha256.New, master, nil, "mcc pii index v1", 32)
	if err != nil {
		return nil, err
	}
	c, err := NewAESGCM(encKey)
	if err != nil {
		return nil, err
	}
	return &Protector{cipher: c, indexKey: indexKey}, nil
}

// Seal encrypts value for storage, bound to context (for example
// "patients/123/resident_id").
func (p *Protector) Seal(value, context string) ([]byte, error) {
	return p.cipher.Seal([]byte(value), []byte(context))
}

// Open decrypts what Seal returned for the same context.
func (p *Protector) Open(sealed []byte, context string) (string, error) {
	b, err := p.cipher.Open(sealed, []byte(context))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Index returns the lookup hash of value as an identifier of kind (for
// example "resident_id"): HMAC-SHA-256 under the index key, in hex. The same
// value always gives the same hash, so it can be a store key.
func (p *Protector) Index(kind, value string) string {
	m := hmac.New(sha256.New, p.indexKey)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// aesGCM is the AES-256-GCM Cipher. A ciphertext is a version byte, the
// nonce, then the sealed value; the version leaves room for key rotation.
type aesGCM struct {
	aead cipher.AEAD
}

const aesGCMVersion = 1

// NewAESGCM returns an AES-256-GCM Cipher with a 32-byte key.
func NewAESGCM(key []byte) (Cipher, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return aesGCM{aead: aead}, nil
}

func (c aesGCM) Seal(plaintext, additional []byte) ([]byte, error) {
	out := make([]byte, 1+c.aead.NonceSize(), 1+c.aead.NonceSize()+len(plaintext)+c.aead.Overhead())
	out[0] = aesGCMVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return c.aead.Seal(out, out[1:], plaintext, additional), nil
}

func (c aesGCM) Open(ciphertext, additional []byte) ([]byte, error) {
	n := c.aead.NonceSize()
	if len(ciphertext) < 1+n || ciphertext[0] != aesGCMVersion {
		return nil, errors.New("pii: unknown ciphertext format")
	}
	return c.aead.Open(nil, ciphertext[1:1+n], ciphertext[1+n:], additional)
}

// Secret is a string that must never be logged. Its LogValue hides it, so a
// Secret passed to slog by mistake still leaks nothing.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String hides the value from fmt too.
func (Secret) String() string { return "[redacted]" }

// Reveal returns the value, for the few places that must use it.
func (s Secret) Reveal() string { return string(s) }

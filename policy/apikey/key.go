package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// API keys have the shape
//
//	tg_<id>_<secret>
//
// where <id> is 12 characters and <secret> 52 characters, both in lower-case
// base32 (the RFC 4648 alphabet a-z, 2-7). The id (60 random bits) is public:
// logs, audit events and `toolgate keys list` name keys by it. The secret
// holds 32 random bytes (256 bits); only its SHA-256 is stored. The fixed
// prefix and shape let secret scanners recognise a leaked key, and every
// character is a "word" character, so a double click selects a whole key.
const (
	// Prefix starts every key toolgate issues.
	Prefix = "tg_"
	// IDLen is the length of a key id.
	IDLen = 12
	// SecretLen is the length of the encoded secret of a key.
	SecretLen = 52
	// Len is the length of a whole key.
	Len = len(Prefix) + IDLen + 1 + SecretLen

	keySecretBytes = 32
	base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567"
)

// keyEncoding encodes key secrets (and ids) without padding.
var keyEncoding = base32.NewEncoding(base32Alphabet).WithPadding(base32.NoPadding)

// Sources of a [Key].
const (
	SourceStore  = "store"  // issued by `toolgate keys create` and kept in the key store
	SourceConfig = "config" // listed by hash in the configuration file
)

// Statuses of a [Key], as returned by [Key.Status].
const (
	StatusActive  = "active"
	StatusExpired = "expired"
	StatusRevoked = "revoked"
)

// Key describes an API key. It never holds the key's secret or its hash.
type Key struct {
	// ID is the public id of the key (the part between "tg_" and the
	// second "_"). For a configuration key that does not have the tg_
	// shape, it is the first 12 hex digits of the key's SHA-256.
	ID string
	// Name is a label chosen by the operator ("ci", "alice's laptop").
	Name string
	// Project is the only project whose endpoint accepts the key.
	Project string
	// Created is when the key was issued (zero for configuration keys).
	Created time.Time
	// Expires is when the key stops working; zero means never.
	Expires time.Time
	// Revoked is when the key was revoked; zero means it was not.
	Revoked time.Time
	// LastUsed is the time of the last recorded use; zero means never.
	LastUsed time.Time
	// Calls counts the recorded uses.
	Calls int64
	// RotatedTo is the id of the key that replaced this one, if any.
	RotatedTo string
	// Source is SourceStore or SourceConfig.
	Source string
}

// Status returns the key's status at now: StatusRevoked once it has been
// revoked, otherwise StatusExpired from its expiry on, otherwise
// StatusActive.
func (k *Key) Status(now time.Time) string {
	switch {
	case !k.Revoked.IsZero():
		return StatusRevoked
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return StatusExpired
	default:
		return StatusActive
	}
}

// Generate returns a new random key, its id and the hex SHA-256 of its
// secret (the only part of it a key store keeps).
func Generate() (plaintext, id, secretHash string, err error) {
	id, err = newKeyID()
	if err != nil {
		return "", "", "", err
	}
	var b [keySecretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", "", fmt.Errorf("generate key secret: %w", err)
	}
	secret := keyEncoding.EncodeToString(b[:])
	return Prefix + id + "_" + secret, id, hashSecret(secret), nil
}

// newKeyID returns IDLen random base32 characters. 256 is a multiple of
// 32, so taking each random byte modulo 32 is unbiased.
func newKeyID() (string, error) {
	var b [IDLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate key id: %w", err)
	}
	for i := range b {
		b[i] = base32Alphabet[b[i]%32]
	}
	return string(b[:]), nil
}

// Parse splits a key of the shape tg_<id>_<secret> into its id and
// secret. It checks the shape strictly: prefix, length, separator and the
// alphabet of both parts. Its errors (which wrap [ErrMalformed]) say what
// is wrong without repeating any part of s.
func Parse(s string) (id, secret string, err error) {
	if !strings.HasPrefix(s, Prefix) {
		return "", "", malformed("it does not start with %q", Prefix)
	}
	if len(s) != Len {
		return "", "", malformed("it has %d characters, want %d", len(s), Len)
	}
	rest := s[len(Prefix):]
	if rest[IDLen] != '_' {
		return "", "", malformed("want %q after the %d-character key id", "_", IDLen)
	}
	id, secret = rest[:IDLen], rest[IDLen+1:]
	if i := badBase32(id); i >= 0 {
		return "", "", malformed("the key id has a character outside a-z and 2-7 at position %d", i+1)
	}
	if i := badBase32(secret); i >= 0 {
		return "", "", malformed("the secret has a character outside a-z and 2-7 at position %d", i+1)
	}
	// 52 characters carry 260 bits; the last 4 must be zero for the
	// secret to be the encoding of 32 bytes.
	if strings.IndexByte(base32Alphabet, secret[SecretLen-1])&0xf != 0 {
		return "", "", malformed("the secret does not encode %d bytes (its last character is wrong)", keySecretBytes)
	}
	return id, secret, nil
}

// badBase32 returns the index of the first byte of s outside the key
// alphabet, or -1.
func badBase32(s string) int {
	for i := range len(s) {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return i
		}
	}
	return -1
}

// malformed returns an error wrapping ErrMalformed: "malformed API key:
// <what is wrong>".
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Hash returns the hex SHA-256 of a whole key, the form in which the
// configuration file lists keys (`apiKeys: [{name, sha256}]`).
func Hash(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(sum[:])
}

// hashSecret returns the hex SHA-256 of a key's secret, the form a key
// store keeps.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// decodeHash parses a hex SHA-256.
func decodeHash(s string) (h [sha256.Size]byte, err error) {
	if len(s) != 2*sha256.Size {
		return h, fmt.Errorf("want %d hex digits, have %d characters", 2*sha256.Size, len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, errors.New("not a hex string")
	}
	return h, nil
}

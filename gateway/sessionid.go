package gateway

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/internal/config"
)

// A session of a client on a protocol version older than 2026-07-28 is
// valid on every replica that shares the session key: its ID is what the
// session needs, sealed with AES-256-GCM under a key derived from the
// operator's sessionKey. A replica that has not seen a session opens its
// ID and rebuilds the MCP SDK's side of it (front.go); nothing is looked
// up anywhere. The ID carries only what initialize settled and never
// changes afterwards (clients keep the ID of the initialize answer: the
// go-sdk client refuses another), so what a session changes later (a log
// level, resource subscriptions) stays with the replica that answered the
// change.
//
// The format is base64url (no padding) of: a format byte, the first four
// bytes of the key's id (which of the configured keys sealed it), a
// 12-byte random nonce, and the AES-GCM ciphertext and tag of the
// session's state as JSON. The project's name is additional data: an ID
// opens only at the endpoint of the project it was issued by.

// sessionIDFormat is the first byte of every sealed session ID.
const sessionIDFormat = 1

// maxSessionIDLen bounds the session IDs the gateway tries to open (the
// largest it issues is well under it).
const maxSessionIDLen = 4096

// sessionState is what a sealed session ID holds.
type sessionState struct {
	// Key is the owner of the session: the id of the API key that opened
	// it, or the subject of its OAuth access token ("" when credentials
	// are not required); every request of the session must present it.
	Key string `json:"k,omitempty"`
	// Requested is the protocol version the client asked for in
	// initialize; Negotiated the one the gateway answered.
	Requested  string `json:"r"`
	Negotiated string `json:"n"`
	// Caps are the client's capabilities that the gateway acts on.
	Caps *sealedCaps `json:"c,omitempty"`
	// Client names the client (its clientInfo name and version).
	Client *sealedClient `json:"i,omitempty"`
}

// sealedCaps are the client capabilities a session keeps: those the relay
// reads (roots, sampling, elicitation). Experimental capabilities and
// extensions are not kept; the gateway does not use them.
type sealedCaps struct {
	Roots       *mcp.RootCapabilities        `json:"roots,omitempty"`
	Sampling    *mcp.SamplingCapabilities    `json:"sampling,omitempty"`
	Elicitation *mcp.ElicitationCapabilities `json:"elicitation,omitempty"`
}

// sealedClient is the clientInfo a session keeps.
type sealedClient struct {
	Name    string `json:"n"`
	Version string `json:"v,omitempty"`
}

// maxClientField bounds the clientInfo name and version a session keeps.
const maxClientField = 128

// initializeState returns the state of a session opened by an initialize
// request with params (raw JSON, as sent) by key: what the MCP SDK reads
// from the same params, and the version it negotiates from served. ok is
// false when params are not an object the SDK would accept.
func initializeState(params json.RawMessage, key string, served []string) (st sessionState, ok bool) {
	var p struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ClientInfo      *struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"clientInfo"`
	}
	if len(params) == 0 || params[0] != '{' {
		return st, false
	}
	if _, err := sdkParse(params, &p); err != nil {
		return st, false
	}
	st = sessionState{Key: key, Requested: p.ProtocolVersion, Negotiated: negotiateVersion(p.ProtocolVersion, served)}
	if len(p.Capabilities) > 0 && p.Capabilities[0] == '{' {
		var c sealedCaps
		if _, err := sdkParse(p.Capabilities, &c); err == nil && (c.Roots != nil || c.Sampling != nil || c.Elicitation != nil) {
			st.Caps = &c
		}
	}
	if ci := p.ClientInfo; ci != nil && (ci.Name != "" || ci.Version != "") {
		st.Client = &sealedClient{Name: clip.Prefix(ci.Name, maxClientField), Version: clip.Prefix(ci.Version, maxClientField)}
	}
	return st, true
}

// negotiateVersion is the version the MCP SDK answers to an initialize
// asking for requested, given the versions served (newest first): the
// requested one when served and older than 2026-07-28 (initialize does not
// negotiate that one), else the newest served that is older.
func negotiateVersion(requested string, served []string) string {
	for _, v := range served {
		if v == requested && v < versionStateless {
			return v
		}
	}
	for _, v := range served {
		if v < versionStateless {
			return v
		}
	}
	return "2025-11-25"
}

// sdkState is the state the MCP SDK keeps for a session of st, for a
// session rebuilt from its ID.
func (st *sessionState) sdkState() *mcp.ServerSessionState {
	ip := &mcp.InitializeParams{ProtocolVersion: st.Requested, Capabilities: &mcp.ClientCapabilities{}}
	if c := st.Caps; c != nil {
		ip.Capabilities.RootsV2 = c.Roots
		if c.Roots != nil {
			ip.Capabilities.Roots = *c.Roots
		}
		ip.Capabilities.Sampling = c.Sampling
		ip.Capabilities.Elicitation = c.Elicitation
	}
	if st.Client != nil {
		ip.ClientInfo = &mcp.Implementation{Name: st.Client.Name, Version: st.Client.Version}
	}
	// InitializedParams stay nil: the client's notifications/initialized
	// may reach this replica after the rebuild, and the SDK acts on none
	// of it.
	return &mcp.ServerSessionState{InitializeParams: ip, NegotiatedProtocolVersion: st.Negotiated}
}

// sessionSealer seals and opens session IDs with the configured keys: the
// first seals, every one opens (so that a new key can be rolled out
// before the old one is removed).
type sessionSealer struct {
	keys    []sealKey
	setting string // the sessionKey setting it was made from
}

type sealKey struct {
	id   [4]byte
	aead cipher.AEAD
}

// newSessionSealer derives the sealing keys from secrets.
func newSessionSealer(secrets []string) (*sessionSealer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no session key")
	}
	s := &sessionSealer{}
	for i, secret := range secrets {
		if len(secret) < config.SessionKeyMinLen {
			return nil, fmt.Errorf("key %d is %d bytes long: at least %d are needed", i+1, len(secret), config.SessionKeyMinLen)
		}
		k, err := hkdf.Key(sha256.New, []byte(secret), nil, "toolgate session id v1", 32)
		if err != nil {
			return nil, err
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(append([]byte("toolgate session key id\x00"), k...))
		var sk sealKey
		copy(sk.id[:], sum[:4])
		sk.aead = aead
		for _, other := range s.keys {
			if other.id == sk.id {
				return nil, fmt.Errorf("key %d is given twice", i+1)
			}
		}
		s.keys = append(s.keys, sk)
	}
	return s, nil
}

// randomSessionSealer seals with a key of its own, known to this process
// only: the sessions it issues are valid on this replica until it exits.
func randomSessionSealer() *sessionSealer {
	s, err := newSessionSealer([]string{rand.Text() + rand.Text()})
	if err != nil {
		panic(err) // a 52-byte secret is always valid
	}
	return s
}

// sessionAD is the additional data of a project's session IDs.
func sessionAD(project string) []byte {
	return append([]byte("toolgate session\x00"), project...)
}

// seal returns the session ID of st at project's endpoint.
func (s *sessionSealer) seal(project string, st *sessionState) (string, error) {
	plain, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	k := s.keys[0]
	out := make([]byte, 0, 1+4+12+len(plain)+k.aead.Overhead())
	out = append(out, sessionIDFormat)
	out = append(out, k.id[:]...)
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	out = k.aead.Seal(out, nonce, plain, sessionAD(project))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// open returns the state sealed in id for project's endpoint; ok is false
// for an ID that no configured key sealed for that project (or that was
// altered).
func (s *sessionSealer) open(project, id string) (sessionState, bool) {
	var st sessionState
	if len(id) > maxSessionIDLen {
		return st, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(raw) < 1+4+12+16 || raw[0] != sessionIDFormat {
		return st, false
	}
	for _, k := range s.keys {
		if !bytes.Equal(k.id[:], raw[1:5]) {
			continue
		}
		nonce, sealed := raw[5:5+k.aead.NonceSize()], raw[5+k.aead.NonceSize():]
		plain, err := k.aead.Open(nil, nonce, sealed, sessionAD(project))
		if err != nil {
			return st, false
		}
		if err := json.Unmarshal(plain, &st); err != nil {
			return st, false
		}
		return st, true
	}
	return st, false
}

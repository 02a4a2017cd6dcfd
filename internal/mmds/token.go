package mmds

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// Token parameters, as in Firecracker's token.rs.
const (
	// MinTokenTTLSeconds is the shortest token lifetime a guest may request.
	MinTokenTTLSeconds = 1
	// MaxTokenTTLSeconds is the longest token lifetime (6 hours).
	MaxTokenTTLSeconds = 21600
	// TokenLengthLimit bounds the tokens Validate will try to decode; longer
	// strings are rejected without decrypting anything.
	TokenLengthLimit = 70
	// TokenPath is the only path a guest may PUT to.
	TokenPath = "/latest/api/token"
)

// Token layout: iv(12) || AES-256-GCM(expiry as little-endian u64 ms)(8) ||
// tag(16), standard base64 with padding: 36 bytes, 48 characters.
const (
	ivLen      = 12
	keyLen     = 32
	payloadLen = 8
	tagLen     = 16
	tokenLen   = ivLen + payloadLen + tagLen
)

// InvalidTTLError is returned by Generate for a lifetime outside
// [MinTokenTTLSeconds, MaxTokenTTLSeconds]; the guest receives its text.
type InvalidTTLError struct{ TTL uint32 }

// Error returns Firecracker's message, which the guest receives verbatim.
func (e *InvalidTTLError) Error() string {
	return fmt.Sprintf("Invalid time to live value provided for token: %d. Please provide a value between %d and %d.",
		e.TTL, MinTokenTTLSeconds, MaxTokenTTLSeconds)
}

// Clock returns monotonic time since an arbitrary fixed origin; tokens store
// their expiry on this scale, in milliseconds.
type Clock func() time.Duration

// processStart anchors the default clock; time.Since uses Go's monotonic
// reading, so wall-clock jumps do not expire or revive tokens.
var processStart = time.Now()

func defaultClock() time.Duration { return time.Since(processStart) }

// TokenAuthority issues and checks MMDS V2 session tokens. A token is the
// encrypted expiry time under a random per-process key, authenticated with
// the instance ID as additional data, so it only validates in the process
// (and for the microVM) that issued it.
type TokenAuthority struct {
	mu    sync.RWMutex // Validate only reads; Generate may rekey
	aead  cipher.AEAD
	count uint32 // tokens sealed under the current key
	aad   []byte
	clock Clock
}

// NewTokenAuthority returns an authority with a fresh random key, bound to
// instanceID (the --id value).
func NewTokenAuthority(instanceID string) *TokenAuthority {
	t := &TokenAuthority{clock: defaultClock}
	t.aead = newAEAD()
	t.setAAD(instanceID)
	return t
}

// newAEAD makes an AES-256-GCM instance under a random key. crypto/rand
// cannot fail on supported platforms (it aborts the process instead).
func newAEAD() cipher.AEAD {
	key := make([]byte, keyLen)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // only possible for a wrong key length
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

func (t *TokenAuthority) setAAD(instanceID string) {
	t.aad = []byte("microvmid=" + instanceID)
}

// SetInstanceID rebinds tokens to another instance ID; tokens issued before
// stop validating.
func (t *TokenAuthority) SetInstanceID(instanceID string) {
	t.mu.Lock()
	t.setAAD(instanceID)
	t.mu.Unlock()
}

// SetClock replaces the clock (tests). A nil clock restores the default.
func (t *TokenAuthority) SetClock(c Clock) {
	if c == nil {
		c = defaultClock
	}
	t.mu.Lock()
	t.clock = c
	t.mu.Unlock()
}

func (t *TokenAuthority) nowMillis() uint64 {
	d := t.clock()
	if d < 0 {
		return 0
	}
	return uint64(d / time.Millisecond)
}

// Generate issues a token valid for ttlSeconds. It returns *InvalidTTLError
// when ttlSeconds is out of bounds.
func (t *TokenAuthority) Generate(ttlSeconds uint32) (string, error) {
	if ttlSeconds < MinTokenTTLSeconds || ttlSeconds > MaxTokenTTLSeconds {
		return "", &InvalidTTLError{TTL: ttlSeconds}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// GCM with random nonces must not seal 2^32 messages under one key;
	// Firecracker rekeys at that point, invalidating every earlier token.
	if t.count == math.MaxUint32 {
		t.aead = newAEAD()
		t.count = 0
	}
	expiry := t.nowMillis() + uint64(ttlSeconds)*1000

	buf := make([]byte, ivLen, tokenLen)
	rand.Read(buf)
	var plain [payloadLen]byte
	binary.LittleEndian.PutUint64(plain[:], expiry)
	buf = t.aead.Seal(buf, buf[:ivLen], plain[:], t.aad)
	t.count++
	return base64.StdEncoding.EncodeToString(buf), nil
}

// strictB64 rejects non-canonical padding bits, as Rust's base64 does.
var strictB64 = base64.StdEncoding.Strict()

// Validate reports whether token was issued by this authority for the
// current instance ID and has not expired.
func (t *TokenAuthority) Validate(token string) bool {
	// encoding/base64 skips CR and LF; the Rust decoder does not.
	if len(token) > TokenLengthLimit || strings.ContainsAny(token, "\r\n") {
		return false
	}
	raw, err := strictB64.DecodeString(token)
	if err != nil || len(raw) != tokenLen {
		return false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	plain, err := t.aead.Open(nil, raw[:ivLen], raw[ivLen:], t.aad)
	if err != nil {
		return false
	}
	return binary.LittleEndian.Uint64(plain) > t.nowMillis()
}

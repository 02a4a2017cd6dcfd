package mmds

import (
	"encoding/base64"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable Clock.
type fakeClock struct{ now atomic.Int64 }

func (f *fakeClock) clock() time.Duration    { return time.Duration(f.now.Load()) }
func (f *fakeClock) advance(d time.Duration) { f.now.Add(int64(d)) }

func newTestAuthority(id string) (*TokenAuthority, *fakeClock) {
	fc := &fakeClock{}
	fc.now.Store(int64(1000 * time.Hour)) // arbitrary non-zero origin
	ta := NewTokenAuthority(id)
	ta.SetClock(fc.clock)
	return ta, fc
}

func TestTokenTTLBounds(t *testing.T) {
	ta, _ := newTestAuthority("vm")
	for _, ttl := range []uint32{0, MaxTokenTTLSeconds + 1, math.MaxUint32} {
		_, err := ta.Generate(ttl)
		var e *InvalidTTLError
		if !errors.As(err, &e) || e.TTL != ttl {
			t.Fatalf("Generate(%d) = %v", ttl, err)
		}
	}
	_, err := ta.Generate(0)
	if want := "Invalid time to live value provided for token: 0. Please provide a value between 1 and 21600."; err.Error() != want {
		t.Errorf("message %q", err)
	}
	for _, ttl := range []uint32{MinTokenTTLSeconds, MaxTokenTTLSeconds / 2, MaxTokenTTLSeconds} {
		tok, err := ta.Generate(ttl)
		if err != nil || !ta.Validate(tok) {
			t.Errorf("ttl %d: %v", ttl, err)
		}
	}
}

func TestTokenLayout(t *testing.T) {
	ta, _ := newTestAuthority("vm")
	tok, err := ta.Generate(60)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(tok)
	if len(tok) != 48 || err != nil || len(raw) != 36 {
		t.Fatalf("token %q (%d chars, %d bytes, %v)", tok, len(tok), len(raw), err)
	}
	other, _ := ta.Generate(60)
	if other == tok {
		t.Error("two tokens are identical: nonce not random")
	}
}

func TestTokenExpiry(t *testing.T) {
	ta, fc := newTestAuthority("vm")
	tok, _ := ta.Generate(1)
	fc.advance(999 * time.Millisecond)
	if !ta.Validate(tok) {
		t.Fatal("expired early")
	}
	// Valid while expiry > now, so it dies exactly at the TTL.
	fc.advance(time.Millisecond)
	if ta.Validate(tok) {
		t.Fatal("valid at expiry")
	}
	long, _ := ta.Generate(MaxTokenTTLSeconds)
	fc.advance(6*time.Hour - time.Millisecond)
	if !ta.Validate(long) {
		t.Fatal("6h token expired early")
	}
	fc.advance(time.Millisecond)
	if ta.Validate(long) {
		t.Fatal("6h token outlived its TTL")
	}
}

func TestTokenTamperAndBinding(t *testing.T) {
	ta, _ := newTestAuthority("vm-a")
	tok, _ := ta.Generate(60)
	raw, _ := base64.StdEncoding.DecodeString(tok)
	for i := range raw {
		bad := append([]byte(nil), raw...)
		bad[i] ^= 0x01
		if ta.Validate(base64.StdEncoding.EncodeToString(bad)) {
			t.Fatalf("flipping byte %d still validates", i)
		}
	}
	for _, bad := range []string{
		"", "INVALID_TOKEN", tok[:47], tok + "=", tok[:24] + "\n" + tok[24:],
		strings.Repeat("A", TokenLengthLimit+1), base64.StdEncoding.EncodeToString(append(raw, 0)),
		base64.RawStdEncoding.EncodeToString(raw[:35]),
	} {
		if ta.Validate(bad) {
			t.Errorf("Validate(%q) = true", bad)
		}
	}

	// Another authority has another key.
	tb, _ := newTestAuthority("vm-a")
	if tb.Validate(tok) {
		t.Error("token valid under another key")
	}
	// The instance ID is authenticated data.
	ta.SetInstanceID("vm-b")
	if ta.Validate(tok) {
		t.Error("token valid for another instance")
	}
	ta.SetInstanceID("vm-a")
	if !ta.Validate(tok) {
		t.Error("token invalid after restoring the instance ID")
	}
}

func TestTokenKeyRotation(t *testing.T) {
	ta, _ := newTestAuthority("vm")
	old, _ := ta.Generate(60)
	ta.count = math.MaxUint32 - 1
	last, _ := ta.Generate(60) // the last token under the first key
	if !ta.Validate(old) || !ta.Validate(last) {
		t.Fatal("tokens invalid before rotation")
	}
	fresh, _ := ta.Generate(60)
	if ta.Validate(old) || ta.Validate(last) {
		t.Error("old tokens survive rotation")
	}
	if !ta.Validate(fresh) || ta.count != 1 {
		t.Errorf("after rotation: valid=%v count=%d", ta.Validate(fresh), ta.count)
	}
}

func TestTokenDefaultClock(t *testing.T) {
	ta := NewTokenAuthority("vm")
	tok, err := ta.Generate(1)
	if err != nil || !ta.Validate(tok) {
		t.Fatal("default clock")
	}
	ta.SetClock(func() time.Duration { return -time.Second })
	if !ta.Validate(tok) {
		t.Error("negative clock")
	}
	ta.SetClock(nil)
	if !ta.Validate(tok) {
		t.Error("restored clock")
	}
}

package mmds

import (
	"errors"
	"net/http"
	"net/netip"
	"testing"
)

func TestVersion(t *testing.T) {
	var zero Version
	if zero != V1 || V1.String() != "V1" || V2.String() != "V2" {
		t.Fatal("version basics")
	}
	for in, want := range map[string]Version{"V1": V1, "V2": V2} {
		if v, ok := ParseVersion(in); !ok || v != want {
			t.Errorf("ParseVersion(%q) = %v, %v", in, v, ok)
		}
	}
	for _, in := range []string{"v1", "", "V3", "foo"} {
		if _, ok := ParseVersion(in); ok {
			t.Errorf("ParseVersion(%q) accepted", in)
		}
	}
}

func TestIsLinkLocalValid(t *testing.T) {
	cases := map[string]bool{
		"169.254.169.254":        true,
		"169.254.1.0":            true,
		"169.254.254.255":        true,
		"169.254.0.1":            false,
		"169.254.255.1":          false,
		"169.255.1.1":            false,
		"1.1.1.1":                false,
		"::1":                    false,
		"::ffff:169.254.169.254": false,
	}
	for s, want := range cases {
		if got := IsLinkLocalValid(netip.MustParseAddr(s)); got != want {
			t.Errorf("%s: %v", s, got)
		}
	}
	if IsLinkLocalValid(netip.Addr{}) {
		t.Error("zero Addr")
	}
}

func TestConfigValidate(t *testing.T) {
	known := []string{"eth0", "eth1"}
	cases := []struct {
		c    Config
		want error
	}{
		{Config{NetworkInterfaces: []string{"eth0"}}, nil},
		{Config{NetworkInterfaces: []string{"eth1", "eth0"}, Version: V2, IPv4Address: netip.MustParseAddr("169.254.10.1")}, nil},
		{Config{}, ErrEmptyNetworkInterfaces},
		{Config{NetworkInterfaces: []string{"eth0", "eth9"}}, ErrUnknownNetworkInterface},
		{Config{NetworkInterfaces: []string{"eth0"}, IPv4Address: netip.MustParseAddr("1.1.1.1")}, ErrInvalidIPv4Address},
		// The address is checked first, as in Firecracker.
		{Config{IPv4Address: netip.MustParseAddr("169.254.0.5")}, ErrInvalidIPv4Address},
	}
	for i, c := range cases {
		if got := c.c.Validate(known); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}

func TestConfigDefaultsAndMessages(t *testing.T) {
	c := Config{NetworkInterfaces: []string{"eth0"}}
	if c.IPv4() != DefaultIPv4Address || c.WithDefaults().IPv4Address.String() != "169.254.169.254" {
		t.Error("default address")
	}
	msgs := map[error]string{
		ErrEmptyNetworkInterfaces:  "MMMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty.",
		ErrUnknownNetworkInterface: "MMMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.",
		ErrInvalidIPv4Address:      "MMMDS config error: The MMDS IPv4 address is not link local.",
		ErrNotInitialized:          "MMDS error: The MMDS data store is not initialized.",
		ErrLimitExceeded:           "MMDS limit exceeded error: The MMDS patch request doesn't fit.",
	}
	for err, want := range msgs {
		st, got := FaultMessage(err)
		wantSt := http.StatusBadRequest
		if errors.Is(err, ErrLimitExceeded) {
			wantSt = http.StatusRequestEntityTooLarge
		}
		if got != want || st != wantSt {
			t.Errorf("FaultMessage(%v) = %d %q", err, st, got)
		}
	}
}

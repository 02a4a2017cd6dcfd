package tap

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openTestTap creates a throw-away TAP (it vanishes when closed), or skips
// the test where the host does not allow it (no /dev/net/tun, or no
// CAP_NET_ADMIN).
func openTestTap(t *testing.T) *Tap {
	t.Helper()
	name := fmt.Sprintf("sqoff%d", os.Getpid()%1000000)
	tp, err := Open(name, func(err error) string { return err.Error() })
	if err != nil {
		t.Skipf("cannot create a TAP here: %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func TestSetOffload(t *testing.T) {
	tp := openTestTap(t)
	for _, flags := range []uint{
		0,
		OffloadCSUM,
		OffloadCSUM | OffloadTSO4 | OffloadTSO6,
		OffloadCSUM | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN,
	} {
		if err := tp.SetOffload(flags); err != nil {
			t.Errorf("SetOffload(%#x): %v", flags, err)
		}
	}
	// The kernel refuses flags it does not know, and segmentation
	// offloads without checksum offload.
	for _, flags := range []uint{1 << 20, OffloadTSO4} {
		if err := tp.SetOffload(flags); !errors.Is(err, unix.EINVAL) {
			t.Errorf("SetOffload(%#x) = %v, want EINVAL", flags, err)
		}
	}
}

// TestSetOffloadKeepsDeadlines checks that SetOffload leaves the file on
// the poller: a read with a deadline in the past returns at once.
func TestSetOffloadKeepsDeadlines(t *testing.T) {
	tp := openTestTap(t)
	if err := tp.SetOffload(OffloadCSUM); err != nil {
		t.Fatal(err)
	}
	if err := tp.File.SetReadDeadline(unixEpoch); err != nil {
		t.Fatalf("deadline: %v", err)
	}
	buf := make([]byte, 2048)
	if _, err := tp.File.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %v, want a deadline error", err)
	}
}

var unixEpoch = time.Unix(1, 0)

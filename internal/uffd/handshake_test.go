package uffd

import (
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseRegions(t *testing.T) {
	good := `[{"base_host_virt_addr":139637976727552,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096},` +
		`{"base_host_virt_addr":139637977776128,"size":4096,"offset":8192,"page_size":4096}]`
	// Firecracker's exact bytes for one region, unknown keys tolerated.
	rs, err := ParseRegions([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []Region{
		{BaseHostVirtAddr: 139637976727552, Size: 8192, Offset: 0, PageSize: 4096, PageSizeKiB: 4096},
		{BaseHostVirtAddr: 139637977776128, Size: 4096, Offset: 8192, PageSize: 4096, PageSizeKiB: 4096},
	}
	if !reflect.DeepEqual(rs, want) {
		t.Fatalf("got %+v", rs)
	}
	// What we send is what Firecracker sends, key for key.
	b, _ := MarshalRegions(want[:1])
	if string(b) != `[{"base_host_virt_addr":139637976727552,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096}]` {
		t.Fatalf("marshal: %s", b)
	}
	if _, err := ParseRegions([]byte(`[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"extra":1}]`)); err != nil {
		t.Fatalf("unknown key: %v", err)
	}
	for _, bad := range []string{
		``, `{}`, `null`, `[]`, `[1]`, `"x"`,
		`[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":0}]`,
		`[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":3000}]`,
		`[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":2048}]`,
		`[{"base_host_virt_addr":4096,"size":0,"offset":0,"page_size":4096}]`,
		`[{"base_host_virt_addr":4097,"size":4096,"offset":0,"page_size":4096}]`,
		`[{"base_host_virt_addr":4096,"size":4095,"offset":0,"page_size":4096}]`,
		`[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":4}]`,
		`[{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0,"page_size":4096}]`,
		`[{"base_host_virt_addr":4096,"size":4096,"offset":18446744073709551615,"page_size":4096}]`,
		`[{"base_host_virt_addr":-4096,"size":4096,"offset":0,"page_size":4096}]`,
		`[{"base_host_virt_addr":4096.5,"size":4096,"offset":0,"page_size":4096}]`,
		`[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096},` +
			`{"base_host_virt_addr":8192,"size":4096,"offset":8192,"page_size":4096}]`, // overlap
		`[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096}] x`,
	} {
		if rs, err := ParseRegions([]byte(bad)); err == nil {
			t.Errorf("ParseRegions(%s) = %+v, want an error", bad, rs)
		}
	}
}

func FuzzParseRegions(f *testing.F) {
	f.Add([]byte(`[{"base_host_virt_addr":139637976727552,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096}]`))
	f.Add([]byte(`[{"base_host_virt_addr":2097152,"size":2097152,"offset":4096,"page_size":2097152}]`))
	f.Add([]byte(`[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096},{"base_host_virt_addr":8192,"size":4096,"offset":8192,"page_size":4096}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := ParseRegions(b)
		if err != nil {
			return
		}
		if len(rs) == 0 {
			t.Fatal("accepted no regions")
		}
		for i, r := range rs {
			if r.check() != nil || r.PageSizeKiB != r.PageSize {
				t.Fatalf("region %d accepted: %+v", i, r)
			}
			for _, o := range rs[i+1:] {
				if r.BaseHostVirtAddr < o.End() && o.BaseHostVirtAddr < r.End() {
					t.Fatalf("overlapping regions accepted: %+v %+v", r, o)
				}
			}
		}
		// What parses survives a round trip.
		out, err := MarshalRegions(rs)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseRegions(out)
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}

// listen returns a listener on a fresh socket path.
func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "uffd.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func TestConnectReceive(t *testing.T) {
	l, path := listen(t)
	regions := []Region{{BaseHostVirtAddr: 1 << 30, Size: 1 << 20, Offset: 0, PageSize: 4096, PageSizeKiB: 4096}}
	// Any descriptor will do to check that it arrives: a pipe's read end.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	type result struct {
		hs  *Handshake
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			got <- result{nil, err}
			return
		}
		defer c.Close()
		hs, err := Receive(c)
		got <- result{hs, err}
	}()
	conn, err := Connect(path, regions, p[1])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer unix.Close(r.hs.Uffd)
	if !reflect.DeepEqual(r.hs.Regions, regions) {
		t.Fatalf("regions %+v", r.hs.Regions)
	}
	// The received descriptor is the pipe's write end.
	if _, err := unix.Write(r.hs.Uffd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if n, _ := unix.Read(p[0], buf); n != 1 || buf[0] != 'x' {
		t.Fatal("received descriptor is not the one sent")
	}
}

func TestConnectErrors(t *testing.T) {
	_, err := Connect(filepath.Join(t.TempDir(), "none.sock"), nil, 0)
	var ce *ConnectError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Connect to a missing socket: %v", err)
	}
}

func TestReceiveRejects(t *testing.T) {
	for _, c := range []struct {
		name    string
		payload string
		fd      bool
		want    string
	}{
		{"no descriptor", `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096}]`, false, "no userfaultfd"},
		{"bad json", `[{"base_host_virt_addr":4096,`, true, "invalid uffd handshake"},
		{"bad region", `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":3}]`, true, "page_size"},
		{"closed", ``, false, "closed the connection"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, path := listen(t)
			errc := make(chan error, 1)
			go func() {
				conn, err := l.AcceptUnix()
				if err != nil {
					errc <- err
					return
				}
				defer conn.Close()
				_, err = Receive(conn)
				errc <- err
			}()
			conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			var oob []byte
			if c.fd {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					t.Fatal(err)
				}
				defer unix.Close(p[0])
				defer unix.Close(p[1])
				oob = unix.UnixRights(p[0])
			}
			if c.payload != "" || oob != nil {
				if _, _, err := conn.WriteMsgUnix([]byte(c.payload), oob, nil); err != nil {
					t.Fatal(err)
				}
			}
			// The sender hangs up, so an incomplete message ends.
			conn.Close()
			if err := <-errc; err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Receive = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

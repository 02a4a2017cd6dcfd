//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkSnapshotQEMU is BenchmarkSnapshot's comparison: QEMU's microvm
// machine saving the same guest (1 vCPU, 128 MiB and 1 GiB, the snapecho
// test) with QMP migrate to a file, and restoring it in a new QEMU started
// with -incoming defer, timed from migrate-incoming to the running state
// (as squib's load is timed from the request to its answer), and to the
// guest's first console echo. QEMU needs SQUIB_L1_QEMU=1 in the sandbox
// (bench/snapshot.sh sets it).
func BenchmarkSnapshotQEMU(b *testing.B) {
	qemu := os.Getenv("SQUIB_QEMU")
	if qemu == "" {
		var err error
		if qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			b.Fatal("no QEMU: set SQUIB_QEMU or run the sandbox with SQUIB_L1_QEMU=1")
		}
	}
	for _, mib := range []int{128, 1024} {
		b.Run(fmt.Sprintf("mem=%dMiB", mib), func(b *testing.B) {
			var create, load, echo time.Duration
			echoes := 0
			for i := 0; i < b.N; i++ {
				c, l, e, ok := qemuSnapshotRound(b, qemu, mib)
				create, load = create+c, load+l
				if ok {
					echo += e
					echoes++
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(create.Microseconds())/1000/n, "ms-create")
			b.ReportMetric(float64(load.Microseconds())/1000/n, "ms-load")
			if echoes > 0 {
				b.ReportMetric(float64(echo.Microseconds())/1000/float64(echoes), "ms-to-console-echo")
			}
			// Rounds whose restored guest never echoed within 30 s.
			b.ReportMetric(float64(b.N-echoes), "no-echo")
		})
	}
}

// qemuVM is one QEMU process with its console and QMP socket.
type qemuVM struct {
	cmd     *exec.Cmd
	console *console
	stdin   io.WriteCloser
	qmp     *qmpConn
}

func startQEMU(b *testing.B, qemu string, mib int, dir, tag string, extra ...string) *qemuVM {
	// QEMU's option syntax gives "=" and "," meanings: the sub-benchmark's
	// temporary directory ("mem=128MiB...") cannot hold the socket.
	sdir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(sdir) })
	sock := filepath.Join(sdir, tag+".qmp")
	args := append([]string{"-M", "microvm,rtc=on", "-enable-kvm", "-cpu", "host", "-m", fmt.Sprintf("%dM", mib), "-smp", "1",
		"-nographic", "-kernel", envB(b, "SQUIB_GUEST_VMLINUX"), "-initrd", envB(b, "SQUIB_GUEST_INITRD"), "-no-reboot",
		"-append", "console=ttyS0 reboot=t panic=1 quiet " + benchArgs + " squib.test=snapecho",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...)
	q := &qemuVM{cmd: exec.Command(qemu, args...), console: newConsole()}
	q.cmd.Stdout, q.cmd.Stderr = q.console, q.console
	if q.stdin, err = q.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	if err := q.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.cmd.Process.Kill(); q.cmd.Wait() })
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if q.qmp, err = dialQMP(sock); err == nil {
			return q
		}
		if time.Now().After(deadline) {
			b.Fatalf("QMP: %v; console:\n%s", err, q.console.text())
		}
	}
}

// qemuSnapshotRound boots, saves, restores and ends one QEMU guest. The
// load is timed from migrate-incoming to the running state: reading the
// migration stream, then cont.
func qemuSnapshotRound(b *testing.B, qemu string, mib int) (create, load, echo time.Duration, echoed bool) {
	dir, err := os.MkdirTemp("", "qemusnap")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "vm.migration")
	a := startQEMU(b, qemu, mib, dir, "a")
	if !waitText(a.console, "SQUIB-SNAP-READY", bootTimeout) {
		b.Fatalf("the QEMU guest never became ready:\n%s", a.console.text())
	}
	t0 := time.Now()
	a.qmp.do(b, "stop", nil)
	a.qmp.do(b, "migrate", map[string]any{"uri": "exec:cat > " + file})
	a.qmp.waitMigration(b, "completed")
	create = time.Since(t0)
	a.cmd.Process.Kill()
	a.cmd.Wait()

	r := startQEMU(b, qemu, mib, dir, "b", "-incoming", "defer")
	t0 = time.Now()
	r.qmp.do(b, "migrate-incoming", map[string]any{"uri": "exec:cat " + file})
	// The source was stopped before it was saved, so the restored VM stays
	// paused until told to continue (squib's resume_vm).
	r.qmp.waitMigration(b, "completed")
	r.qmp.do(b, "cont", nil)
	for {
		var st struct {
			Status string `json:"status"`
		}
		r.qmp.doInto(b, "query-status", nil, &st)
		if st.Status == "running" {
			break
		}
		if time.Since(t0) > 2*time.Minute {
			b.Fatalf("the restored QEMU never ran (%s)", st.Status)
		}
		time.Sleep(time.Millisecond)
	}
	load = time.Since(t0)
	echo, echoed = consoleEchoWithin(r.stdin, r.console, t0, 30*time.Second)
	if !echoed {
		b.Logf("the QEMU guest restored from %d MiB did not echo in 30 s; console:\n%s", mib, r.console.text())
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
	return create, load, echo, echoed
}

func waitText(c *console, s string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if strings.Contains(c.text(), s) {
			return true
		}
	}
	return false
}

// qmpConn is a minimal QMP client: one command at a time, events skipped.
type qmpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialQMP(path string) (*qmpConn, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	q := &qmpConn{c: c, r: bufio.NewReader(c)}
	if _, err := q.r.ReadString('\n'); err != nil { // the greeting
		c.Close()
		return nil, err
	}
	if _, err := q.call("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) call(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	if err := json.NewEncoder(q.c).Encode(req); err != nil {
		return nil, err
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, err
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("QMP %s: %s", cmd, resp.Error.Desc)
		}
		return resp.Return, nil
	}
}

func (q *qmpConn) do(b *testing.B, cmd string, args any) {
	if _, err := q.call(cmd, args); err != nil {
		b.Fatal(err)
	}
}

func (q *qmpConn) doInto(b *testing.B, cmd string, args, into any) {
	ret, err := q.call(cmd, args)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(ret, into); err != nil {
		b.Fatal(err)
	}
}

// waitMigration polls query-migrate until the status is want.
func (q *qmpConn) waitMigration(b *testing.B, want string) {
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Millisecond) {
		var st struct {
			Status string `json:"status"`
		}
		q.doInto(b, "query-migrate", nil, &st)
		switch {
		case st.Status == want:
			return
		case st.Status == "failed" || time.Now().After(deadline):
			b.Fatalf("migration %s", st.Status)
		}
	}
}

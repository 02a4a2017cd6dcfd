//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkBootSquib measures squib process start to the guest's init
// (the SQUIB-GUEST-UP console line): the Debian kernel as ELF vmlinux,
// 1 vCPU, 128 MiB, the test initramfs. It also reports squib's resident
// memory beyond guest RAM while the guest runs.
func BenchmarkBootSquib(b *testing.B) {
	var rssExtra float64
	var total time.Duration
	for i := 0; i < b.N; i++ {
		g := guest{kernel: envB(b, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 128, args: benchArgs}
		cfg := writeConfig(b, g)
		c := newConsole()
		begin := time.Now()
		cmd := exec.Command(envB(b, "SQUIB_BIN"), "--no-api", "--config-file", cfg, "--log-path", os.DevNull)
		cmd.Stdout, cmd.Stderr = c, c
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitLineB(b, c, "SQUIB-GUEST-UP")
		total += time.Since(begin)
		// The guest powers off by itself; squib then exits. (Killing a
		// VMM whose guest runs has panicked the sandbox's L1 kernel.)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("squib: %v; console:\n%s", err, c.text())
		}
	}
	rssExtra = measureRSS(b)
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-init")
	b.ReportMetric(rssExtra, "MiB-rss-beyond-guest")
}

// BenchmarkBootQEMU boots the same kernel and initramfs with QEMU's
// microvm machine (-M microvm,rtc=on), the comparison the project's
// performance target is stated against. SQUIB_QEMU names the binary
// (default: qemu-system-x86_64 on PATH).
func BenchmarkBootQEMU(b *testing.B) {
	qemu := os.Getenv("SQUIB_QEMU")
	if qemu == "" {
		var err error
		if qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			b.Fatal("no QEMU: set SQUIB_QEMU or run the sandbox with SQUIB_L1_QEMU=1 (bench/boot.sh does)")
		}
	}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		c := newConsole()
		begin := time.Now()
		// As tests/sandbox/qemu-guest.sh runs it.
		cmd := exec.Command(qemu, "-M", "microvm,rtc=on", "-enable-kvm", "-cpu", "host", "-m", "128M", "-smp", "1",
			"-nographic", "-kernel", envB(b, "SQUIB_GUEST_VMLINUX"), "-initrd", envB(b, "SQUIB_GUEST_INITRD"),
			"-no-reboot", "-append", "console=ttyS0 reboot=t panic=1 quiet "+benchArgs)
		cmd.Stdout, cmd.Stderr = c, c
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitLineB(b, c, "SQUIB-GUEST-UP")
		total += time.Since(begin)
		// reboot=t and -no-reboot: the guest's power-off ends QEMU.
		cmd.Wait()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-init")
}

// measureRSS boots a guest that stays up, reads squib's resident memory
// beyond guest RAM, then ends the guest with Ctrl+Alt+Del.
func measureRSS(b *testing.B) float64 {
	dir := b.TempDir()
	sock := dir + "/api.sock"
	c := newConsole()
	g := guest{kernel: envB(b, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 128, args: "squib.test=hold"}
	cmd := exec.Command(envB(b, "SQUIB_BIN"), "--api-sock", sock, "--config-file", writeConfig(b, g), "--log-path", os.DevNull)
	cmd.Stdout, cmd.Stderr = c, c
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	waitLineB(b, c, "SQUIB-GUEST-HOLD")
	rss := float64(rssBeyondGuest(b, cmd.Process.Pid, 128<<20)) / (1 << 20)
	s := &squib{sock: sock}
	req, _ := http.NewRequest("PUT", "http://localhost/actions", strings.NewReader(`{"action_type":"SendCtrlAltDel"}`))
	resp, err := s.client().Do(req)
	if err != nil || resp.StatusCode != 204 {
		b.Fatalf("SendCtrlAltDel: %v %v", resp, err)
	}
	resp.Body.Close()
	cmd.Wait()
	return rss
}

// benchArgs are the i8042 options of Firecracker's default command line,
// given to both VMMs so the command lines differ only in reboot=k/t.
const benchArgs = "i8042.noaux i8042.nomux i8042.dumbkbd"

func envB(b *testing.B, name string) string {
	v := os.Getenv(name)
	if v == "" {
		b.Fatalf("%s is not set: run through tests/sandbox/run.sh", name)
	}
	return v
}

func writeConfig(b *testing.B, g guest) string { return g.configTB(b) }

func waitLineB(b *testing.B, c *console, prefix string) {
	deadline := time.Now().Add(bootTimeout)
	for time.Now().Before(deadline) {
		if strings.Contains(c.text(), prefix) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("no %q on the console; got:\n%s", prefix, c.text())
}

// rssBeyondGuest sums the resident memory of every mapping of pid except
// the guest RAM mapping (the anonymous mapping of guestSize bytes), and
// logs the largest contributors.
func rssBeyondGuest(b *testing.B, pid int, guestSize int64) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	type mapping struct {
		name string
		rss  int64
	}
	var maps []mapping
	var total int64
	skip := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			r := strings.SplitN(fields[0], "-", 2)
			lo, _ := strconv.ParseUint(r[0], 16, 64)
			hi, _ := strconv.ParseUint(r[1], 16, 64)
			skip = int64(hi-lo) == guestSize
			name := "[anon]"
			if len(fields) >= 6 {
				name = fields[5]
			}
			maps = append(maps, mapping{name: fmt.Sprintf("%s %s %dK", fields[0], name, (hi-lo)>>10)})
			continue
		}
		if !skip && len(fields) >= 2 && fields[0] == "Rss:" && len(maps) > 0 {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			maps[len(maps)-1].rss = kb << 10
			total += kb << 10
		}
	}
	sort.Slice(maps, func(i, j int) bool { return maps[i].rss > maps[j].rss })
	for i := 0; i < len(maps) && i < 8; i++ {
		b.Logf("rss %6d KiB  %s", maps[i].rss>>10, maps[i].name)
	}
	return total
}

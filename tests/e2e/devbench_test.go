//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Device benchmarks: the same guest measures its own throughput under squib
// and under QEMU's microvm machine (virtio-mmio devices, as squib's) in one
// run of the sandbox. Run them with bench/devices.sh.

// devRun is one VMM run of a device benchmark.
type devRun struct {
	args   string         // guest command line additions
	extra  map[string]any // squib config sections
	qemu   []string       // QEMU device arguments
	netns  bool           // run inside a network namespace with tap0
	listen func() error   // called inside that namespace before the guest runs
}

func qemuBinary(b *testing.B) string {
	if q := os.Getenv("SQUIB_QEMU"); q != "" {
		return q
	}
	q, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Fatal("no QEMU: run the sandbox with SQUIB_L1_QEMU=1 (bench/devices.sh does)")
	}
	return q
}

// run boots the guest under squib (qemu false) or QEMU and returns its
// console once the VMM has exited. In the sandbox a run that ends in the
// nested emulator's triple faults (see nestedFlake) is retried, at most
// twice, and logged, as the end-to-end tests do.
func (r devRun) run(b *testing.B, qemu bool) *console {
	b.Helper()
	for attempt := 1; ; attempt++ {
		c, log := r.runOnce(b, qemu)
		if !nestedCrash(log) || attempt == 3 || os.Getenv("SQUIB_TEST_MODE") != "sandbox" {
			return c
		}
		b.Logf("attempt %d: the guest crashed under nested virtualization; retrying. Log:\n%s", attempt, log)
	}
}

// runOnce is one run; it returns the console and, when squib failed, its
// log.
func (r devRun) runOnce(b *testing.B, qemu bool) (*console, string) {
	b.Helper()
	c := newConsole()
	var argv []string
	var logPath string
	bin := envB(b, "SQUIB_BIN")
	if qemu {
		bin = qemuBinary(b)
		argv = append([]string{bin, "-M", "microvm,rtc=on", "-enable-kvm", "-cpu", "host", "-m", "256M", "-smp", "1",
			"-nographic", "-no-reboot", "-kernel", envB(b, "SQUIB_GUEST_VMLINUX"), "-initrd", envB(b, "SQUIB_GUEST_INITRD"),
			"-append", "console=ttyS0 reboot=t panic=1 quiet " + benchArgs + " " + r.args}, r.qemu...)
	} else {
		g := guest{kernel: envB(b, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 256, args: benchArgs + " " + r.args, extra: r.extra}
		logPath = filepath.Join(b.TempDir(), "squib.log")
		argv = []string{bin, "--no-api", "--config-file", writeConfig(b, g), "--log-path", logPath, "--level", "Info"}
	}
	if r.netns {
		argv = append([]string{"unshare", "-n", "sh", "-c", netnsScript, "sh"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = c, c
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if r.netns {
		waitExec(b, cmd.Process.Pid, bin)
		inNetns(b, cmd.Process.Pid, r.listen)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil && logPath != "" {
			log, _ := os.ReadFile(logPath)
			return c, fmt.Sprintf("%s: %v\n%s", bin, err, log)
		}
	case <-time.After(bootTimeout):
		cmd.Process.Kill()
		<-done
		b.Fatalf("the guest did not finish; console:\n%s", c.text())
	}
	return c, ""
}

// figure returns the number a SQUIB-<key>=<number> console line reports.
func figure(b *testing.B, c *console, key string) float64 {
	b.Helper()
	for _, l := range strings.Split(c.text(), "\n") {
		if i := strings.Index(l, "SQUIB-"+key+"="); i >= 0 {
			v, err := strconv.ParseFloat(strings.TrimSpace(l[i+len(key)+7:]), 64)
			if err == nil {
				return v
			}
		}
	}
	b.Fatalf("no SQUIB-%s figure; console:\n%s", key, c.text())
	return 0
}

// benchDisk makes a zeroed 64 MiB drive image (in L1's RAM, so the host
// side is not the bottleneck).
func benchDisk(b *testing.B) string {
	p := filepath.Join(b.TempDir(), "bench.img")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 64<<20)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return p
}

func blockRun(disk string, limiter map[string]any, mib int, reqKiB int) devRun {
	d := map[string]any{"drive_id": "bench", "path_on_host": disk, "is_root_device": false}
	if limiter != nil {
		d["rate_limiter"] = limiter
	}
	return devRun{
		args:  "squib.modules=virtio_mmio,virtio_blk squib.test=blkbench squib.blkmib=" + strconv.Itoa(mib) + reqArg(reqKiB),
		extra: map[string]any{"drives": []any{d}},
		qemu:  []string{"-drive", "file=" + disk + ",if=none,id=d0,format=raw,cache=writeback", "-device", "virtio-blk-device,drive=d0"},
	}
}

// reqArg caps the guest's block requests at kib KiB (0: no cap).
func reqArg(kib int) string {
	if kib == 0 {
		return ""
	}
	return " squib.blkreqkb=" + strconv.Itoa(kib)
}

func benchBlock(b *testing.B, qemu bool, reqKiB int) {
	disk := benchDisk(b)
	var rd, wr, req, segs float64
	for i := 0; i < b.N; i++ {
		mib := 64
		if reqKiB != 0 {
			mib = 16 // small requests: keep the run short
		}
		c := blockRun(disk, nil, mib, reqKiB).run(b, qemu)
		rd += figure(b, c, "BLK-READ-MIBS")
		wr += figure(b, c, "BLK-WRITE-MIBS")
		req += figure(b, c, "BLK-REQ-KIB")
		segs = figure(b, c, "BLK-MAX-SEGMENTS")
	}
	n := float64(b.N)
	b.ReportMetric(rd/n, "MiB/s-read")
	b.ReportMetric(wr/n, "MiB/s-write")
	// Firecracker (and so squib) offers no VIRTIO_BLK_F_SEG_MAX: Linux
	// then sends one segment per request; QEMU offers it.
	b.ReportMetric(req/n, "KiB/request")
	b.ReportMetric(segs, "max-segments")
}

// BenchmarkBlockSquib: sequential read and write of a virtio-blk drive
// from inside the guest, under squib.
func BenchmarkBlockSquib(b *testing.B) { benchBlock(b, false, 0) }

// BenchmarkBlockQEMU: the same under QEMU microvm with virtio-blk-device on
// the same kind of file.
func BenchmarkBlockQEMU(b *testing.B) { benchBlock(b, true, 0) }

// BenchmarkBlockSquib4K and BenchmarkBlockQEMU4K cap the guest's requests
// at 4 KiB, what a one-segment request (Firecracker's and squib's feature
// set) carries, so the two device paths compare request for request.
func BenchmarkBlockSquib4K(b *testing.B) { benchBlock(b, false, 4) }

// BenchmarkBlockQEMU4K: see BenchmarkBlockSquib4K.
func BenchmarkBlockQEMU4K(b *testing.B) { benchBlock(b, true, 4) }

// BenchmarkBlockRateLimit: a drive limited to 10 MiB/s (a 1 MiB bucket
// refilled every 100 ms); reports the rate the guest achieves and its
// ratio to the configured one.
func BenchmarkBlockRateLimit(b *testing.B) {
	disk := benchDisk(b)
	const configured = 10.0
	lim := map[string]any{"bandwidth": map[string]any{"size": 1 << 20, "refill_time": 100}}
	var rd, wr float64
	for i := 0; i < b.N; i++ {
		c := blockRun(disk, lim, 40, 0).run(b, false)
		rd += figure(b, c, "BLK-READ-MIBS")
		wr += figure(b, c, "BLK-WRITE-MIBS")
	}
	rd, wr = rd/float64(b.N), wr/float64(b.N)
	b.ReportMetric(configured, "MiB/s-configured")
	b.ReportMetric(rd, "MiB/s-read")
	b.ReportMetric(wr, "MiB/s-write")
	b.ReportMetric(rd/configured, "read/configured")
	b.ReportMetric(wr/configured, "write/configured")
}

// sink accepts one TCP connection on :5001, reads it to the end and
// closes it (tcp-send's timing includes that close).
func sink() error {
	ln, err := net.Listen("tcp4", ":5001")
	if err != nil {
		return err
	}
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	return nil
}

func benchNet(b *testing.B, qemu bool) {
	r := devRun{
		args:   "squib.modules=virtio_mmio,virtio_net squib.test=netbench",
		extra:  map[string]any{"network-interfaces": []any{map[string]any{"iface_id": "eth0", "host_dev_name": "tap0"}}},
		qemu:   []string{"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off", "-device", "virtio-net-device,netdev=n0"},
		netns:  true,
		listen: sink,
	}
	var tx, frame float64
	for i := 0; i < b.N; i++ {
		c := r.run(b, qemu)
		tx += figure(b, c, "NET-TX-MIBS")
		frame += figure(b, c, "NET-TX-FRAME-B")
	}
	b.ReportMetric(tx/float64(b.N), "MiB/s-guest-to-host")
	b.ReportMetric(frame/float64(b.N), "B/frame")
}

// BenchmarkNetSquib: guest -> host TCP throughput over a TAP, under squib.
func BenchmarkNetSquib(b *testing.B) { benchNet(b, false) }

// BenchmarkNetQEMU: the same under QEMU microvm (virtio-net-device on a
// TAP, no vhost).
func BenchmarkNetQEMU(b *testing.B) { benchNet(b, true) }

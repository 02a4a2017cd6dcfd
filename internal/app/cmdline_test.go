package app

// Subprocess tests of squib's command line: argv in, exit code and
// stdout/stderr/log out, checked against Firecracker's behaviour
// (spec §6, §7 and the test_cmd_line_start / test_cmd_line_parameters /
// test_api_server integration tests).

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/snapshot"
	"github.com/squib-vmm/squib/internal/vmm"
)

// logLineRE is Firecracker's log line prefix: local timestamp with 9
// fractional digits, then [instance-id:thread(:LEVEL)(:file:line)].
var logLineRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} \[[^:\]]+:[^\]]+\] `)

// firecrackerFlags are every flag of Firecracker's main.rs, plus --help.
var firecrackerFlags = []string{
	"api-sock", "id", "seccomp-filter", "no-seccomp", "start-time-us", "start-time-cpu-us",
	"parent-cpu-time-us", "config-file", "metadata", "no-api", "log-path", "level", "module",
	"show-level", "show-log-origin", "metrics-path", "boot-timer", "version", "snapshot-version",
	"describe-snapshot", "http-api-max-payload-size", "mmds-size-limit", "enable-pci", "help",
}

// bootableConfig is a config file that is valid but needs a real boot.
const bootableConfig = `{
  "boot-source": {"kernel_image_path": "{dir}/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"},
  "drives": [{"drive_id": "rootfs", "path_on_host": "{dir}/rootfs.ext4", "is_root_device": true, "is_read_only": false}],
  "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}
}`

// bigMetadata is more than 30 bytes of valid JSON.
const bigMetadata = `{"latest": {"meta-data": {"ami-id": "ami-12345678", "reservation-id": "r-fea54097"}}}`

type cmdCase struct {
	name  string
	args  []string
	setup func(t *testing.T, dir string) // prepares files in the process's dir
	code  int                            // expected exit code; -1: any non-zero
	// Substrings expected in stdout, stderr and the log (stdout, as no
	// case sets --log-path).
	stdout, stderr, log []string
	// notOut are substrings that must not appear in stdout or stderr.
	notOut []string
	// logOnly: every stdout line must be a log line, the first one
	// containing "Running Firecracker".
	logOnly bool
	check   func(t *testing.T, p *proc)
}

// files writes name/content pairs ({dir} expanded) into dir.
func files(pairs ...string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		for i := 0; i+1 < len(pairs); i += 2 {
			writeFile(t, dir, pairs[i], strings.ReplaceAll(pairs[i+1], "{dir}", dir))
		}
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	versionLine := "Firecracker v" + vmm.FirecrackerVersion + "\n\n"
	noCrash := []string{"panic", "goroutine ", "SIGSEGV"}
	parseErr := "Arguments parsing error: "
	cases := []cmdCase{
		{
			name: "version", args: []string{"--version"}, code: 0,
			check: func(t *testing.T, p *proc) {
				out := p.stdout()
				if !strings.HasPrefix(out, versionLine) {
					t.Errorf("stdout = %q, want it to start with %q", out, versionLine)
				}
				// Firecracker's main logs "exiting successfully" (to stdout,
				// the default log target) after printing the version; nothing
				// else may follow.
				checkLogLines(t, strings.TrimPrefix(out, versionLine), false)
				if p.stderr() != "" {
					t.Errorf("stderr = %q, want empty", p.stderr())
				}
			},
		},
		{
			name: "version-beats-errors", args: []string{"--bogus", "--version", "--id", "a_b"}, code: 0,
			stdout: []string{versionLine},
		},
		{
			name: "help", args: []string{"--help"}, code: 0,
			stdout: []string{versionLine, "optional arguments:"},
			check: func(t *testing.T, p *proc) {
				out := p.stdout()
				if !strings.HasPrefix(out, versionLine) {
					t.Errorf("stdout does not start with %q:\n%s", versionLine, out)
				}
				for _, f := range firecrackerFlags {
					if !regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(f) + `( |$)`).MatchString(out) {
						t.Errorf("--help does not list --%s:\n%s", f, out)
					}
				}
			},
		},
		{name: "help-short", args: []string{"-h"}, code: 0, stdout: []string{versionLine, "  --api-sock <api-sock>"}},
		{
			name: "snapshot-version", args: []string{"--snapshot-version"}, code: 0,
			check: func(t *testing.T, p *proc) {
				want := snapshot.Current.String() + "\n"
				if out := p.stdout(); !strings.HasPrefix(out, want) {
					t.Errorf("stdout = %q, want it to start with %q", out, want)
				}
			},
		},
		{
			name: "describe-snapshot", args: []string{"--describe-snapshot", "vm.snap"}, code: 0,
			setup: func(t *testing.T, dir string) {
				if err := snapshot.WriteFile(filepath.Join(dir, "vm.snap"), []byte("{}")); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, p *proc) {
				if out := p.stdout(); !strings.HasPrefix(out, "v11.0.0\n") {
					t.Errorf("stdout = %q", out)
				}
				if p.stderr() != "" {
					t.Errorf("stderr = %q, want empty", p.stderr())
				}
			},
		},
		{
			name: "describe-corrupt-snapshot", args: []string{"--describe-snapshot", "vm.snap"}, code: 1,
			setup:  files("vm.snap", "not a snapshot at all"),
			stderr: []string{"When printing Snapshot Data format: CRC64 validation failed"},
		},
		{
			name: "describe-missing-snapshot", args: []string{"--describe-snapshot", "nope.snap"}, code: 1,
			stderr: []string{"When printing Snapshot Data format: Failed to open snapshot file: No such file or directory (os error 2)"},
		},
		{
			name: "unknown-flag", args: []string{"--bogus"}, code: 153,
			stderr: []string{parseErr + "Found argument 'bogus' which wasn't expected, or isn't valid in this context.", "For more information try --help."},
			log:    []string{parseErr, "Firecracker exiting with error. exit_code=153"},
		},
		{
			name: "equals-form", args: []string{"--api-sock=x"}, code: 153,
			stderr: []string{parseErr + "Found argument 'api-sock=x' which wasn't expected"},
		},
		{
			name: "positional", args: []string{"foo"}, code: 153,
			stderr: []string{parseErr + "Found argument 'foo' which wasn't expected"},
		},
		{
			name: "repeated-flag", args: []string{"--id", "a", "--id", "b"}, code: 153,
			stderr: []string{parseErr + "The argument 'id' was provided more than once."},
		},
		{
			name: "repeated-bool-flag", args: []string{"--no-seccomp", "--no-seccomp"}, code: 153,
			stderr: []string{parseErr + "The argument 'no-seccomp' was provided more than once."},
		},
		{
			name: "missing-value", args: []string{"--api-sock"}, code: 153,
			stderr: []string{parseErr + "The argument 'api-sock' requires a value, but none was supplied."},
		},
		{
			name: "value-starting-with-dashes", args: []string{"--id", "--no-seccomp"}, code: 153,
			stderr: []string{parseErr + "The argument 'id' requires a value, but none was supplied."},
		},
		{
			name: "no-api-without-config", args: []string{"--no-api"}, code: 153,
			stderr: []string{parseErr + "Argument 'config-file' required, but not found."},
		},
		{
			name: "seccomp-filter-and-no-seccomp", args: []string{"--seccomp-filter", "f", "--no-seccomp"}, code: 153,
			setup:  files("f", "{}"),
			stderr: []string{parseErr, "cannot be used together with argument"},
		},
		{
			name: "bad-level", args: []string{"--level", "bogus", "--api-sock", "{dir}/api.sock"}, code: 152,
			stderr: []string{"Invalid value for logger level", "bogus"},
			log:    []string{"Firecracker exiting with error. exit_code=152"},
		},
		{
			name: "id-underscore", args: []string{"--id", "my_vm", "--api-sock", "{dir}/api.sock"}, code: -1,
			stderr: []string{"Invalid instance ID", "_"}, notOut: noCrash,
		},
		{
			name: "id-65-chars", args: []string{"--id", strings.Repeat("a", 65), "--api-sock", "{dir}/api.sock"}, code: -1,
			stderr: []string{"Invalid instance ID", "65"}, notOut: noCrash,
		},
		{
			name: "id-empty", args: []string{"--id", "", "--api-sock", "{dir}/api.sock"}, code: -1,
			stderr: []string{"Invalid instance ID"}, notOut: noCrash,
		},
		{
			name: "payload-size-not-a-number", args: []string{"--http-api-max-payload-size", "abc", "--api-sock", "{dir}/api.sock"}, code: -1,
			stderr: []string{"'http-api-max-payload-size' parameter expected to be of 'usize' type."}, notOut: noCrash,
		},
		{
			name: "mmds-size-limit-not-a-number", args: []string{"--mmds-size-limit", "-1", "--api-sock", "{dir}/api.sock"}, code: -1,
			stderr: []string{"'mmds-size-limit' parameter expected to be of 'usize' type."}, notOut: noCrash,
		},
		{
			name: "start-time-not-a-number", args: []string{"--start-time-us", "x", "--api-sock", "{dir}/api.sock"}, code: -1,
			stderr: []string{"'start-time-us' parameter expected to be of 'u64' type."}, notOut: noCrash,
		},
		{
			name: "socket-exists", args: []string{"--api-sock", "{dir}/api.sock"}, code: 1,
			setup:   files("api.sock", "someone else's"),
			stderr:  []string{"Failed to open the API socket at: {dir}/api.sock. Check that it is not already used."},
			log:     []string{"Failed to open the API socket at: {dir}/api.sock. Check that it is not already used.", "Firecracker exiting with error. exit_code=1"},
			logOnly: true,
			check: func(t *testing.T, p *proc) {
				// squib must not unlink a path it did not create.
				if b, err := os.ReadFile(p.path("api.sock")); err != nil || string(b) != "someone else's" {
					t.Errorf("the existing socket path was changed: %q, %v", b, err)
				}
			},
		},
		{
			name: "config-file-missing", args: []string{"--api-sock", "{dir}/api.sock", "--config-file", "{dir}/nope.json"}, code: 1,
			stderr: []string{"Unable to open or read from the configuration file", "No such file or directory"},
			log:    []string{"Running Firecracker", "Firecracker exiting with error. exit_code=1"}, logOnly: true,
		},
		{
			name: "config-missing-kernel", args: []string{"--api-sock", "{dir}/api.sock", "--config-file", "{dir}/vm.json"}, code: 1,
			setup: files("vm.json", `{"boot-source": {"kernel_image_path": "{dir}/no-kernel"}, "drives": []}`),
			log: []string{
				"Failed to build MicroVM from Json: Configuration for VMM from one single json failed: ",
				"The kernel file cannot be opened: No such file or directory (os error 2)",
				"Firecracker exiting with error. exit_code=1",
			},
			logOnly: true,
		},
		{
			name: "config-missing-vcpu-count", args: []string{"--api-sock", "{dir}/api.sock", "--config-file", "{dir}/vm.json"}, code: 1,
			setup: files("vmlinux", "", "vm.json", `{"boot-source": {"kernel_image_path": "{dir}/vmlinux"}, "drives": [], "machine-config": {"mem_size_mib": 128}}`),
			log:   []string{"Configuration for VMM from one single json failed", "vcpu_count"},
		},
		{
			name: "config-not-json", args: []string{"--api-sock", "{dir}/api.sock", "--config-file", "{dir}/vm.json"}, code: 1,
			setup: files("vm.json", `{"boot-source": `),
			log:   []string{"Configuration for VMM from one single json failed"},
		},
		{
			name: "config-unbootable", args: []string{"--api-sock", "{dir}/api.sock", "--config-file", "{dir}/vm.json"}, code: 1,
			setup:   files("vmlinux", "not a kernel", "rootfs.ext4", "", "vm.json", bootableConfig),
			log:     []string{"Could not Start MicroVM from one single json", "Firecracker exiting with error. exit_code=1"},
			stderr:  []string{"Could not Start MicroVM from one single json"},
			logOnly: true,
		},
		{
			name: "no-api-config-unbootable", args: []string{"--no-api", "--api-sock", "{dir}/api.sock", "--config-file", "{dir}/vm.json"}, code: 1,
			setup:   files("vmlinux", "not a kernel", "rootfs.ext4", "", "vm.json", bootableConfig),
			log:     []string{"Could not Start MicroVM from one single json", "Firecracker exiting with error. exit_code=1"},
			logOnly: true,
			check: func(t *testing.T, p *proc) {
				if strings.Contains(p.stdout(), "API server started") {
					t.Error("--no-api started the API server")
				}
				if _, err := os.Lstat(p.path("api.sock")); err == nil {
					t.Error("--no-api created the API socket")
				}
			},
		},
		{
			name: "metadata-missing", args: []string{"--api-sock", "{dir}/api.sock", "--metadata", "{dir}/nope.json"}, code: 1,
			stderr: []string{"Unable to open or read from the mmds content file", "No such file or directory"},
		},
		{
			name: "metadata-invalid", args: []string{"--api-sock", "{dir}/api.sock", "--metadata", "{dir}/md.json"}, code: 1,
			setup:   files("md.json", `{"latest": `),
			log:     []string{"MMDS error: metadata provided not valid json", "Firecracker exiting with error. exit_code=1"},
			stderr:  []string{"MMDS error: metadata provided not valid json"},
			logOnly: true,
		},
		{
			name: "metadata-over-mmds-limit", args: []string{"--api-sock", "{dir}/api.sock", "--mmds-size-limit", "30", "--metadata", "{dir}/md.json"}, code: 1,
			setup:   files("md.json", bigMetadata),
			log:     []string{"Populating MMDS from file failed: The MMDS patch request doesn't fit."},
			stderr:  []string{"Populating MMDS from file failed: The MMDS patch request doesn't fit."},
			logOnly: true,
		},
		{
			// The MMDS limit defaults to the HTTP payload limit.
			name: "metadata-over-payload-limit", args: []string{"--api-sock", "{dir}/api.sock", "--http-api-max-payload-size", "30", "--metadata", "{dir}/md.json"}, code: 1,
			setup: files("md.json", bigMetadata),
			log:   []string{"Populating MMDS from file failed: The MMDS patch request doesn't fit."},
		},
		{
			name: "seccomp-filter-missing", args: []string{"--api-sock", "{dir}/api.sock", "--seccomp-filter", "{dir}/nope.bpf"}, code: 1,
			stderr: []string{"Seccomp error"}, notOut: noCrash,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if c.setup != nil {
				c.setup(t, dir)
			}
			p := startSquibIn(t, dir, c.args...)
			code := p.wait()
			out, errOut := p.stdout(), p.stderr()
			expand := func(s string) string { return strings.ReplaceAll(s, "{dir}", dir) }
			switch {
			case c.code == -1 && (code <= 0 || code == 134):
				// Non-zero, and neither a signal nor an abort (134 = SIGABRT).
				t.Errorf("exit code = %d, want a clean non-zero exit", code)
			case c.code != -1 && code != c.code:
				t.Errorf("exit code = %d, want %d", code, c.code)
			}
			if code == 134 || code == 2 {
				t.Errorf("squib crashed (exit code %d)", code)
			}
			for _, s := range c.stdout {
				if !strings.Contains(out, expand(s)) {
					t.Errorf("stdout lacks %q", expand(s))
				}
			}
			for _, s := range c.stderr {
				if !strings.Contains(errOut, expand(s)) {
					t.Errorf("stderr lacks %q", expand(s))
				}
			}
			for _, s := range c.log {
				if !strings.Contains(out, expand(s)) {
					t.Errorf("log lacks %q", expand(s))
				}
			}
			for _, s := range c.notOut {
				if strings.Contains(out, s) || strings.Contains(errOut, s) {
					t.Errorf("output contains %q", s)
				}
			}
			if c.code != 0 && c.code != -1 && !strings.Contains(out, "Firecracker exiting with error. exit_code="+strconv.Itoa(c.code)) {
				t.Errorf("log lacks the exit line for code %d", c.code)
			}
			if c.code != 0 && !strings.HasPrefix(errOut, "Error: ") {
				t.Errorf("stderr does not start with \"Error: \"")
			}
			if c.logOnly {
				checkLogLines(t, out, true)
			}
			if c.check != nil {
				c.check(t, p)
			}
			if t.Failed() {
				t.Logf("argv: %q\nstdout:\n%s\nstderr:\n%s", c.args, out, errOut)
			}
		})
	}
}

// checkLogLines checks that every line of out is a log line; with first,
// the first must contain "Running Firecracker".
func checkLogLines(t *testing.T, out string, first bool) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if out == "" {
		lines = nil
	}
	if first && (len(lines) == 0 || !strings.Contains(lines[0], "Running Firecracker")) {
		t.Errorf("the first log line does not contain \"Running Firecracker\":\n%s", out)
	}
	for _, l := range lines {
		if !logLineRE.MatchString(l) {
			t.Errorf("not a log line: %q", l)
		}
	}
}

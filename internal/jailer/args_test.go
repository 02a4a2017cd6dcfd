package jailer

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// argFixture is an exec file and a chroot base that exist.
type argFixture struct {
	exec, base string
}

func newArgFixture(t *testing.T) argFixture {
	t.Helper()
	dir := t.TempDir()
	exec := filepath.Join(dir, "squib")
	if err := os.WriteFile(exec, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return argFixture{exec: exec, base: base}
}

// args returns a valid command line plus more.
func (f argFixture) args(more ...string) []string {
	return append([]string{"--id", "vm-1", "--exec-file", f.exec, "--uid", "1234", "--gid", "4321",
		"--chroot-base-dir", f.base}, more...)
}

func TestParseAllFlags(t *testing.T) {
	f := newArgFixture(t)
	argv := f.args("--netns", "/var/run/netns/x", "--daemonize", "--new-pid-ns",
		"--cgroup", "cpu.max=50000 100000", "--cgroup", "memory.max=1G", "--cgroup", "cpuset.cpus=0-1",
		"--resource-limit", "fsize=1048576", "--resource-limit", "no-file=1024",
		"--cgroup-version", "2", "--parent-cgroup", "vms/tenant-a",
		"--", "--config-file", "/vm.json", "--no-api")
	req, err := parseArgs(argv)
	if err != nil {
		t.Fatal(err)
	}
	c := req.cfg
	fsize := uint64(1048576)
	want := &Config{
		ID: "vm-1", ExecFile: f.exec, ExecName: "squib", ChrootBase: f.base,
		UID: 1234, GID: 4321, NetNS: "/var/run/netns/x", Daemonize: true, NewPIDNS: true,
		CgroupVersion: 2, ParentCgroup: "vms/tenant-a",
		Cgroups: []CgroupProperty{{"cpu.max", "50000 100000"}, {"memory.max", "1G"}, {"cpuset.cpus", "0-1"}},
		Limits:  Limits{FileSize: &fsize, NoFile: 1024},
		Extra:   []string{"--config-file", "/vm.json", "--no-api"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config\n got %+v\nwant %+v", c, want)
	}
	if got, want := c.ChrootDir(), filepath.Join(f.base, "squib", "vm-1", "root"); got != want {
		t.Errorf("ChrootDir %s, want %s", got, want)
	}
}

func TestParseDefaults(t *testing.T) {
	f := newArgFixture(t)
	req, err := parseArgs(f.args())
	if err != nil {
		t.Fatal(err)
	}
	c := req.cfg
	if c.CgroupVersion != 0 || c.ParentCgroup != "squib" || c.Limits.NoFile != 2048 || c.Limits.FileSize != nil ||
		c.Daemonize || c.NewPIDNS || c.NetNS != "" || len(c.Cgroups) != 0 || len(c.Extra) != 0 {
		t.Errorf("defaults: %+v", c)
	}
	// The default chroot base is Firecracker's.
	_, err = parseArgs([]string{"--id", "a", "--exec-file", f.exec, "--uid", "0", "--gid", "0"})
	if _, statErr := os.Stat(DefaultChrootBase); statErr != nil && (err == nil || !strings.Contains(err.Error(), "Failed to canonicalize path /srv/jailer: No such file or directory (os error 2)")) {
		t.Errorf("without /srv/jailer: %v", err)
	}
}

func TestParseSymlinkedExecFile(t *testing.T) {
	f := newArgFixture(t)
	link := filepath.Join(t.TempDir(), "fc-link")
	if err := os.Symlink(f.exec, link); err != nil {
		t.Fatal(err)
	}
	req, err := parseArgs([]string{"--id", "a", "--exec-file", link, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base})
	if err != nil {
		t.Fatal(err)
	}
	// Canonicalised: the jail is named after the target, as in Firecracker.
	if req.cfg.ExecFile != f.exec || req.cfg.ExecName != "squib" {
		t.Errorf("exec file %s name %s", req.cfg.ExecFile, req.cfg.ExecName)
	}
}

func TestParseErrors(t *testing.T) {
	f := newArgFixture(t)
	long := strings.Repeat("a", 65)
	cases := []struct {
		name string
		argv []string
		want string
	}{
		{"no args", nil, "Failed to parse arguments: Argument 'exec-file' required, but not found."},
		{"missing gid", []string{"--id", "a", "--exec-file", f.exec, "--uid", "1"}, "Failed to parse arguments: Argument 'gid' required, but not found."},
		{"missing id", []string{"--exec-file", f.exec, "--uid", "1", "--gid", "1"}, "Failed to parse arguments: Argument 'id' required, but not found."},
		{"missing uid", []string{"--id", "a", "--exec-file", f.exec, "--gid", "1"}, "Failed to parse arguments: Argument 'uid' required, but not found."},
		{"missing value", f.args("--netns"), "Failed to parse arguments: The argument 'netns' requires a value, but none was supplied."},
		{"equals form", append(f.args(), "--netns=/x"), "Failed to parse arguments: Found argument 'netns=/x' which wasn't expected, or isn't valid in this context."},
		{"duplicate", f.args("--id", "b"), "Failed to parse arguments: The argument 'id' was provided more than once."},
		{"unknown", f.args("--seccomp-level", "2"), "Failed to parse arguments: Found argument 'seccomp-level' which wasn't expected, or isn't valid in this context."},
		{"empty id", []string{"--id", "", "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid instance ID: Invalid len (0);  the length must be between 1 and 64"},
		{"long id", []string{"--id", long, "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid instance ID: Invalid len (65);  the length must be between 1 and 64"},
		{"id char", []string{"--id", "12_3aa", "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid instance ID: Invalid char (_) at position 2"},
		{"id slash", []string{"--id", "a/b", "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid instance ID: Invalid char (/) at position 1"},
		{"id dots", []string{"--id", "..", "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid instance ID: Invalid char (.) at position 0"},
		{"missing exec", []string{"--id", "a", "--exec-file", "/nonexistent/squib", "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, "Failed to canonicalize path /nonexistent/squib: No such file or directory (os error 2)"},
		{"exec is dir", []string{"--id", "a", "--exec-file", f.base, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.base}, f.base + " is not a file"},
		{"base missing", []string{"--id", "a", "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", "/nonexistent"}, "Failed to canonicalize path /nonexistent: No such file or directory (os error 2)"},
		{"base is file", []string{"--id", "a", "--exec-file", f.exec, "--uid", "1", "--gid", "1", "--chroot-base-dir", f.exec}, f.exec + " is not a directory"},
		{"uid word", []string{"--id", "a", "--exec-file", f.exec, "--uid", "root", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid uid: root"},
		{"uid negative", []string{"--id", "a", "--exec-file", f.exec, "--uid", "-1", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid uid: -1"},
		{"uid too big", []string{"--id", "a", "--exec-file", f.exec, "--uid", "4294967296", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid uid: 4294967296"},
		{"uid all ones", []string{"--id", "a", "--exec-file", f.exec, "--uid", "4294967295", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid uid: 4294967295"},
		{"uid sign", []string{"--id", "a", "--exec-file", f.exec, "--uid", "+5", "--gid", "1", "--chroot-base-dir", f.base}, "Invalid uid: +5"},
		{"gid word", []string{"--id", "a", "--exec-file", f.exec, "--uid", "1", "--gid", "wheel", "--chroot-base-dir", f.base}, "Invalid gid: wheel"},
		{"gid empty", []string{"--id", "a", "--exec-file", f.exec, "--uid", "1", "--gid", "", "--chroot-base-dir", f.base}, "Invalid gid: "},
		{"parent absolute", f.args("--parent-cgroup", "/sys"), "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"},
		{"parent dotdot", f.args("--parent-cgroup", "a/../../b"), "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"},
		{"parent dot", f.args("--parent-cgroup", "."), "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"},
		{"version 3", f.args("--cgroup-version", "3"), "3 is an invalid cgroup version specifier"},
		{"version word", f.args("--cgroup-version", "v2"), "v2 is an invalid cgroup version specifier"},
		{"cgroup no value", f.args("--cgroup", "memory.max"), "Invalid format for cgroups: memory.max"},
		{"cgroup empty value", f.args("--cgroup", "memory.max="), "Invalid format for cgroups: memory.max="},
		{"cgroup two equals", f.args("--cgroup", "memory.max=1=2"), "Invalid format for cgroups: memory.max=1=2"},
		{"cgroup dotdot", f.args("--cgroup", "../memory.max=1"), "Cgroup invalid file: ../memory.max=1"},
		{"cgroup absolute", f.args("--cgroup", "/etc/passwd=1"), "Cgroup invalid file: /etc/passwd=1"},
		{"cgroup dot", f.args("--cgroup", ".=1"), "Cgroup invalid file: .=1"},
		{"cgroup subdir", f.args("--cgroup", "x/memory.max=1"), "Cgroup invalid file: x/memory.max=1"},
		{"cgroup no controller", f.args("--cgroup", "tasks=1"), "Cgroup invalid file: tasks"},
		{"second cgroup bad", f.args("--cgroup", "memory.max=1", "--cgroup", "bad"), "Invalid format for cgroups: bad"},
		{"limit format", f.args("--resource-limit", "fsize"), "Invalid format for resources limits: fsize"},
		{"limit value", f.args("--resource-limit", "fsize=abc"), "Invalid limit value for resource: abc: invalid digit found in string"},
		{"limit empty", f.args("--resource-limit", "no-file="), "Invalid limit value for resource: : cannot parse integer from empty string"},
		{"limit overflow", f.args("--resource-limit", "no-file=18446744073709551616"), "Invalid limit value for resource: 18446744073709551616: number too large to fit in target type"},
		{"limit name", f.args("--resource-limit", "nproc=5"), "Invalid resource argument: nproc"},
		// Firecracker parses the value first.
		{"limit name and value", f.args("--resource-limit", "nproc=x"), "Invalid limit value for resource: x: invalid digit found in string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseArgs(tc.argv)
			if err == nil {
				t.Fatalf("accepted %q", tc.argv)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %q\nwant %q", err, tc.want)
			}
		})
	}
}

func TestParseIDs(t *testing.T) {
	f := newArgFixture(t)
	for _, id := range []string{"a", "A-1", strings.Repeat("z", 64), "bd65600d-8669-4903-8a14-af88203add38", "-"} {
		if _, err := parseArgs([]string{"--id", id, "--exec-file", f.exec, "--uid", "0", "--gid", "0", "--chroot-base-dir", f.base}); err != nil {
			t.Errorf("id %q: %v", id, err)
		}
	}
	for _, uid := range []string{"0", "1", "65534", "4294967294"} {
		if _, err := parseArgs([]string{"--id", "a", "--exec-file", f.exec, "--uid", uid, "--gid", uid, "--chroot-base-dir", f.base}); err != nil {
			t.Errorf("uid %q: %v", uid, err)
		}
	}
}

func TestParseRepeatedCgroupKeepsOrder(t *testing.T) {
	f := newArgFixture(t)
	req, err := parseArgs(f.args("--cgroup", "cpuset.mems=0", "--cgroup", "cpuset.cpus=1", "--cgroup", "cpuset.mems=1"))
	if err != nil {
		t.Fatal(err)
	}
	want := []CgroupProperty{{"cpuset.mems", "0"}, {"cpuset.cpus", "1"}, {"cpuset.mems", "1"}}
	if !reflect.DeepEqual(req.cfg.Cgroups, want) {
		t.Errorf("cgroups %v, want %v", req.cfg.Cgroups, want)
	}
	if c := req.cfg.Cgroups[0].controller(); c != "cpuset" {
		t.Errorf("controller %q", c)
	}
}

func TestParseHelpAndVersionWin(t *testing.T) {
	// As in Firecracker, --help and --version beat every other error.
	for _, argv := range [][]string{{"--help"}, {"--id", "bad_id", "-h"}, {"--uid", "--help"}} {
		req, err := parseArgs(argv)
		if err != nil || !req.help {
			t.Errorf("%q: %+v %v", argv, req, err)
		}
	}
	req, err := parseArgs([]string{"--cgroup-version", "9", "--version"})
	if err != nil || !req.version {
		t.Errorf("--version: %+v %v", req, err)
	}
}

func TestRunHelpVersionAndErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	help := out.String()
	for _, want := range []string{"Jailer v", "required arguments:", "--exec-file <exec-file>", "optional arguments:",
		"--cgroup-version <cgroup-version>", "detected, 2 when cgroup2 is mounted at /sys/fs/cgroup",
		"[default: \"/srv/jailer\"]",
		"\n\nAny arguments after the -- separator will be supplied to the jailed binary.\n\n"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if !strings.HasPrefix(help, "Jailer v") || !strings.HasSuffix(help, "binary.\n\n") {
		t.Errorf("help framing:\n%q", help)
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "Jailer v") || !strings.HasSuffix(out.String(), "\n\n") {
		t.Errorf("--version: exit %d %q", code, out.String())
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr: %q", errOut.String())
	}
	out.Reset()
	if code := run([]string{"--id", "x"}, &out, &errOut); code != ExitFailure {
		t.Errorf("missing flags: exit %d", code)
	}
	if got := errOut.String(); got != "Failed to parse arguments: Argument 'exec-file' required, but not found.\n" {
		t.Errorf("stderr %q", got)
	}
	if out.Len() != 0 {
		t.Errorf("stdout %q", out.String())
	}
}

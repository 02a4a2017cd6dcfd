package jailer

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func writeMounts(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mounts")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	hybridMounts = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
`
	unifiedMounts = `proc /proc proc rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
`
	v1Mounts = `cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
`
)

func TestReadCgroupMounts(t *testing.T) {
	m, err := readCgroupMounts(writeMounts(t, hybridMounts+`cgroup2 /mnt/with\040space cgroup2 rw 0 0
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountEntry{
		{dir: "/sys/fs/cgroup/unified", v2: true, options: []string{"rw", "nosuid", "nodev", "noexec", "relatime", "nsdelegate"}},
		{dir: "/sys/fs/cgroup/cpu,cpuacct", options: []string{"rw", "nosuid", "nodev", "noexec", "relatime", "cpu", "cpuacct"}},
		{dir: "/sys/fs/cgroup/memory", options: []string{"rw", "nosuid", "nodev", "noexec", "relatime", "memory"}},
		{dir: "/sys/fs/cgroup/systemd", options: []string{"rw", "nosuid", "nodev", "noexec", "relatime", "xattr", "name=systemd"}},
		{dir: "/mnt/with space", v2: true, options: []string{"rw"}},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("mounts\n got %+v\nwant %+v", m, want)
	}
	if _, err := readCgroupMounts("/nonexistent/mounts"); err == nil || err.Error() != "Failed to open file /nonexistent/mounts: No such file or directory (os error 2)" {
		t.Errorf("missing file: %v", err)
	}
}

func TestDetectCgroupVersion(t *testing.T) {
	cases := []struct {
		name, mounts string
		want         int
	}{
		{"unified at /sys/fs/cgroup", unifiedMounts, 2},
		{"hybrid", hybridMounts, 1},
		{"v1 only", v1Mounts, 1},
		{"v2 elsewhere only", "cgroup2 /run/cg2 cgroup2 rw 0 0\n", 2},
		{"none", "proc /proc proc rw 0 0\n", 1},
		{"unified listed after v1", v1Mounts + unifiedMounts, 2},
	}
	for _, tc := range cases {
		m, err := readCgroupMounts(writeMounts(t, tc.mounts))
		if err != nil {
			t.Fatal(err)
		}
		if got := detectCgroupVersion(m); got != tc.want {
			t.Errorf("%s: version %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := detectCgroupVersion(nil); got != 1 {
		t.Errorf("unreadable mounts: %d, want 1", got)
	}
}

func TestPlanCgroupsV1(t *testing.T) {
	m, _ := readCgroupMounts(writeMounts(t, hybridMounts))
	cfg := &Config{ID: "vm", ParentCgroup: "fc/tenant", Cgroups: []CgroupProperty{
		{"cpu.cfs_quota_us", "50000"}, {"memory.limit_in_bytes", "1"}, {"cpuacct.usage", "0"}, {"cpu.shares", "10"}}}
	p, err := planCgroups(cfg, 1, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.dirs) != 2 {
		t.Fatalf("dirs %+v", p.dirs)
	}
	// cpu and cpuacct share one hierarchy: one cgroup, three properties.
	cpu, mem := p.dirs[0], p.dirs[1]
	if cpu.path != "/sys/fs/cgroup/cpu,cpuacct/fc/tenant/vm" || cpu.depth != 2 || len(cpu.props) != 3 {
		t.Errorf("cpu cgroup %+v", cpu)
	}
	if mem.path != "/sys/fs/cgroup/memory/fc/tenant/vm" || len(mem.props) != 1 {
		t.Errorf("memory cgroup %+v", mem)
	}

	cfg.Cgroups = []CgroupProperty{{"pids.max", "5"}}
	if _, err := planCgroups(cfg, 1, m); err == nil || err.Error() != "Controller pids is unavailable" {
		t.Errorf("unmounted controller: %v", err)
	}
	u, _ := readCgroupMounts(writeMounts(t, unifiedMounts))
	if _, err := planCgroups(cfg, 1, u); err == nil || err.Error() != "Hierarchy not found: No hierarchy found for this cgroup version." {
		t.Errorf("v1 on a v2 host: %v", err)
	}
}

func TestPlanCgroupsV2(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	m := []mountEntry{{dir: root, v2: true}}
	cfg := &Config{ID: "vm", ParentCgroup: "squib", Cgroups: []CgroupProperty{{"memory.max", "1G"}, {"cpu.max", "1 2"}}}
	p, err := planCgroups(cfg, 2, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.dirs) != 1 || p.dirs[0].path != filepath.Join(root, "squib", "vm") || len(p.dirs[0].props) != 2 {
		t.Errorf("plan %+v", p.dirs)
	}
	cfg.Cgroups = append(cfg.Cgroups, CgroupProperty{"hugetlb.2MB.max", "0"})
	if _, err := planCgroups(cfg, 2, m); err == nil || err.Error() != "Controller hugetlb is unavailable" {
		t.Errorf("unlisted controller: %v", err)
	}
	v1, _ := readCgroupMounts(writeMounts(t, v1Mounts))
	if _, err := planCgroups(cfg, 2, v1); err == nil || err.Error() != "Hierarchy not found: No hierarchy found for this cgroup version." {
		t.Errorf("v2 on a v1 host: %v", err)
	}
}

func TestSelfCgroups(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cgroup")
	os.WriteFile(p, []byte("12:cpu,cpuacct:/user.slice\n4:memory:/a/b\n1:name=systemd:/init.scope\n0::/user.slice/session-1.scope\n"), 0o644)
	orig := readSelfCgroups(p)
	if got := originalCgroup(orig, &cgroupDir{root: "/sys/fs/cgroup/unified"}); got != "/sys/fs/cgroup/unified/user.slice/session-1.scope" {
		t.Errorf("v2: %s", got)
	}
	if got := originalCgroup(orig, &cgroupDir{root: "/sys/fs/cgroup/memory", ctrls: []string{"rw", "memory"}}); got != "/sys/fs/cgroup/memory/a/b" {
		t.Errorf("memory: %s", got)
	}
	if got := originalCgroup(orig, &cgroupDir{root: "/sys/fs/cgroup/cpu,cpuacct", ctrls: []string{"rw", "cpuacct", "cpu"}}); got != "/sys/fs/cgroup/cpu,cpuacct/user.slice" {
		t.Errorf("cpu: %s", got)
	}
	if got := originalCgroup(orig, &cgroupDir{root: "/x", ctrls: []string{"pids"}}); got != "" {
		t.Errorf("unknown: %s", got)
	}
}

// fakeCgroupTree makes root/a/b with the named file in each directory.
func fakeCgroupTree(t *testing.T, file string, values ...string) (root string, dirs []string) {
	t.Helper()
	root = t.TempDir()
	dirs = []string{root, filepath.Join(root, "a"), filepath.Join(root, "a", "b")}
	for i, d := range dirs {
		os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, file), []byte(values[i]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, dirs
}

func TestInheritFromParent(t *testing.T) {
	// cpuset.cpus is empty in the new parent a and its child b: the value
	// comes down from the root.
	_, dirs := fakeCgroupTree(t, "cpuset.cpus", "0-3\n", "\n", "\n")
	if err := inheritFromParent(dirs[2], "cpuset.cpus", 1); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs[1:] {
		if b, _ := os.ReadFile(filepath.Join(d, "cpuset.cpus")); string(b) != "0-3\n" {
			t.Errorf("%s: %q", d, b)
		}
	}
	// With no level left to climb, an empty parent is an error.
	_, dirs = fakeCgroupTree(t, "cpuset.mems", "0\n", "\n", "\n")
	err := inheritFromParent(dirs[2], "cpuset.mems", 0)
	if err == nil || err.Error() != "Failed to inherit cgroups configurations from file cpuset.mems in path "+dirs[2] {
		t.Errorf("depth 0: %v", err)
	}
	// A file the parent lacks.
	err = inheritFromParent(dirs[2], "memory.bogus", 1)
	if err == nil || !strings.HasPrefix(err.Error(), "Failed to read file "+filepath.Join(dirs[1], "memory.bogus")+" into a string: No such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}

func TestEnableController(t *testing.T) {
	root, dirs := fakeCgroupTree(t, "cgroup.subtree_control", "", "", "")
	if err := enableController(root, dirs[1], "memory"); err != nil {
		t.Fatal(err)
	}
	for i, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.subtree_control"))
		want := "+memory\n"
		if i == 2 { // below the parent: untouched
			want = ""
		}
		if string(b) != want {
			t.Errorf("%s: %q, want %q", d, b, want)
		}
	}
	if err := enableController(root, "/elsewhere", "cpu"); err == nil {
		t.Error("a directory outside the hierarchy was accepted")
	}
}

func TestWriteLineNeverCreates(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "memory.max")
	err := writeLine(p, "1")
	if err == nil || err.Error() != "Failed to write to "+p+": No such file or directory (os error 2)" {
		t.Errorf("missing file: %v", err)
	}
	if _, err := os.Stat(p); err == nil {
		t.Error("writeLine created the file")
	}
	os.WriteFile(p, []byte("max\n"), 0o644)
	if err := writeLine(p, "1"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "1\n" {
		t.Errorf("content %q", b)
	}
}

func TestMkdirAllTrackedAndUndo(t *testing.T) {
	base := t.TempDir()
	existing := filepath.Join(base, "squib")
	os.Mkdir(existing, 0o755)
	var u undo
	target := filepath.Join(existing, "vm", "root")
	if err := mkdirAllTracked(target, 0o755, &u); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		t.Fatal("not created")
	}
	if len(u.steps) != 2 {
		t.Errorf("%d undo steps, want 2 (vm, root)", len(u.steps))
	}
	// Something the run did not create inside a created directory keeps
	// that directory, and undo says so rather than deleting foreign files.
	var warn bytes.Buffer
	u.run(&warn)
	if _, err := os.Stat(filepath.Join(existing, "vm")); err == nil {
		t.Error("vm was left behind")
	}
	if _, err := os.Stat(existing); err != nil {
		t.Error("the pre-existing directory was removed")
	}
	if warn.Len() != 0 {
		t.Errorf("warnings: %s", warn.String())
	}

	if err := mkdirAllTracked(target, 0o755, &u); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(target, "user-file"), nil, 0o644)
	u.run(&warn)
	if _, err := os.Stat(filepath.Join(target, "user-file")); err != nil {
		t.Error("undo removed a file it did not make")
	}
	if !strings.Contains(warn.String(), "Warning: cleanup failed: remove "+target+": Directory not empty") {
		t.Errorf("warnings: %q", warn.String())
	}

	file := filepath.Join(base, "f")
	os.WriteFile(file, nil, 0o644)
	err := mkdirAllTracked(filepath.Join(file, "x"), 0o755, &u)
	if err == nil || err.Error() != "Failed to create directory "+filepath.Join(file, "x")+": Not a directory (os error 20)" {
		t.Errorf("under a file: %v", err)
	}
}

func TestMiscMinor(t *testing.T) {
	p := filepath.Join(t.TempDir(), "misc")
	os.WriteFile(p, []byte(" 57 foo\n257 userfaultfd\n232 kvm\n"), 0o644)
	if m, ok := miscMinor(p, "userfaultfd"); !ok || m != 257 {
		t.Errorf("userfaultfd: %d %v", m, ok)
	}
	if m, ok := miscMinor(p, "foo"); !ok || m != 57 {
		t.Errorf("foo: %d %v", m, ok)
	}
	if _, ok := miscMinor(p, "vhost-net"); ok {
		t.Error("absent device found")
	}
	if _, ok := miscMinor("/nonexistent", "kvm"); ok {
		t.Error("missing file")
	}
	devs := hostDevices(p)
	if len(devs) != 4 || devs[3].path != "/dev/userfaultfd" || devs[3].minor != 257 || !devs[2].optional || devs[1].optional {
		t.Errorf("devices %+v", devs)
	}
	if devs := hostDevices("/nonexistent"); len(devs) != 3 {
		t.Errorf("without /proc/misc: %+v", devs)
	}
}

func TestCopyExecFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the copy is chowned to the jailed user")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "squib")
	os.WriteFile(src, []byte("binary-content"), 0o4755)
	os.Chmod(src, 0o4755)
	dst := filepath.Join(dir, "jail-squib")
	var u undo
	if err := copyExecFile(src, dst, 1234, 4321, &u); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	st := statT(t, dst)
	if fi.Mode() != 0o755 || st.Uid != 1234 || st.Gid != 4321 {
		t.Errorf("copy mode %v owner %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
	if b, _ := os.ReadFile(dst); string(b) != "binary-content" {
		t.Errorf("content %q", b)
	}
	// A longer stale copy is replaced, not overwritten in part.
	os.WriteFile(dst, []byte("a much longer stale binary"), 0o755)
	if err := copyExecFile(src, dst, 1234, 4321, &u); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "binary-content" {
		t.Errorf("content after recopy %q", b)
	}

	// A hard link in place of the binary is refused and left unchanged.
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	linked := filepath.Join(dir, "linked")
	os.Link(victim, linked)
	if err := copyExecFile(src, linked, 1234, 4321, &u); err == nil || err.Error() != "Detected hard link at: "+linked {
		t.Errorf("hard link: %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" || statT(t, victim).Uid != 0 {
		t.Errorf("the linked file changed: %q", b)
	}
	// So is a symbolic link.
	sym := filepath.Join(dir, "sym")
	os.Symlink(victim, sym)
	if err := copyExecFile(src, sym, 1234, 4321, &u); err == nil || !strings.Contains(err.Error(), "Failed to open "+sym+": ") {
		t.Errorf("symlink: %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the symlink target changed: %q", b)
	}
}

func statT(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

package jailer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseArgs: any command line is accepted or refused with a message,
// never a panic, and an accepted one yields a jail below the chroot base.
func FuzzParseArgs(f *testing.F) {
	dir := f.TempDir()
	exec := filepath.Join(dir, "squib")
	os.WriteFile(exec, nil, 0o755)
	f.Add("--id\x00a\x00--uid\x001\x00--gid\x002\x00--cgroup\x00memory.max=1\x00--resource-limit\x00fsize=5")
	f.Add("--id\x00a-b\x00--uid\x001\x00--gid\x002\x00--parent-cgroup\x00x/y\x00--\x00--no-api")
	f.Add("--help")
	f.Fuzz(func(t *testing.T, s string) {
		argv := append(strings.Split(s, "\x00"), "--exec-file", exec, "--chroot-base-dir", dir)
		req, err := parseArgs(argv)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty message")
			}
			return
		}
		if req.cfg == nil {
			return
		}
		rel, err := filepath.Rel(dir, req.cfg.ChrootDir())
		if err != nil || strings.HasPrefix(rel, "..") || filepath.Clean(req.cfg.ChrootDir()) != req.cfg.ChrootDir() {
			t.Fatalf("jail %s escapes %s", req.cfg.ChrootDir(), dir)
		}
		if !validRelPath(req.cfg.ParentCgroup) {
			t.Fatalf("parent cgroup %q", req.cfg.ParentCgroup)
		}
		for _, p := range req.cfg.Cgroups {
			if strings.Contains(p.File, "/") || p.File == ".." {
				t.Fatalf("cgroup file %q", p.File)
			}
		}
	})
}

// FuzzCgroupMounts: arbitrary /proc/mounts and /proc/self/cgroup text.
func FuzzCgroupMounts(f *testing.F) {
	f.Add(hybridMounts, "4:memory:/a\n0::/b\n")
	f.Add(unifiedMounts+`cgroup2 /x\04 cgroup2 rw 0 0`, "")
	f.Fuzz(func(t *testing.T, mounts, self string) {
		dir := t.TempDir()
		mp, sp := filepath.Join(dir, "mounts"), filepath.Join(dir, "cgroup")
		os.WriteFile(mp, []byte(mounts), 0o644)
		os.WriteFile(sp, []byte(self), 0o644)
		m, err := readCgroupMounts(mp)
		if err != nil {
			return
		}
		if v := detectCgroupVersion(m); v != 1 && v != 2 {
			t.Fatalf("version %d", v)
		}
		orig := readSelfCgroups(sp)
		for _, e := range m {
			originalCgroup(orig, &cgroupDir{root: e.dir, ctrls: e.options})
		}
	})
}

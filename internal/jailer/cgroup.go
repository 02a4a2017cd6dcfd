package jailer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/squib-vmm/squib/internal/logger"
)

// Where the kernel describes mounts and this process's cgroups.
const (
	procMounts     = "/proc/mounts"
	procSelfCgroup = "/proc/self/cgroup"
	// defaultCgroupMount is where systemd and most distributions mount the
	// cgroup file system(s); a cgroup2 mount here means a unified host.
	defaultCgroupMount = "/sys/fs/cgroup"
)

// mountEntry is one cgroup or cgroup2 line of /proc/mounts.
type mountEntry struct {
	dir     string
	v2      bool
	options []string // mount options; for v1 they name the controllers
}

// readCgroupMounts returns the cgroup mounts listed in the mounts file, in
// its order.
func readCgroupMounts(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("Failed to open file %s: %s", path, logger.OSErrorText(err))
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[2] != "cgroup" && fields[2] != "cgroup2" {
			continue
		}
		out = append(out, mountEntry{
			dir:     unescapeMount(fields[1]),
			v2:      fields[2] == "cgroup2",
			options: strings.Split(fields[3], ","),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("Failed to read line from %s: %s", path, logger.OSErrorText(err))
	}
	return out, nil
}

// unescapeMount undoes the octal escapes (\040 for a space...) that the
// kernel writes in /proc/mounts paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// detectCgroupVersion picks the cgroup version when --cgroup-version is not
// given. Firecracker assumes 1, which fails on today's cgroup2-only hosts;
// squib looks: 2 when cgroup2 is mounted at /sys/fs/cgroup, or when no
// cgroup v1 hierarchy is mounted but a cgroup2 one is; 1 otherwise (hybrid
// hosts, with cgroup2 at /sys/fs/cgroup/unified, keep their controllers in
// v1).
func detectCgroupVersion(mounts []mountEntry) int {
	haveV1, haveV2 := false, false
	for _, m := range mounts {
		if m.v2 && m.dir == defaultCgroupMount {
			return 2
		}
		haveV1 = haveV1 || !m.v2
		haveV2 = haveV2 || m.v2
	}
	if haveV2 && !haveV1 {
		return 2
	}
	return 1
}

// unifiedMount returns the first cgroup2 mount, as Firecracker does.
func unifiedMount(mounts []mountEntry) (string, error) {
	for _, m := range mounts {
		if m.v2 {
			return m.dir, nil
		}
	}
	return "", errors.New("Hierarchy not found: No hierarchy found for this cgroup version.")
}

// cgroupDir is one cgroup the jailer creates, <hierarchy>/<parent>/<id>,
// with the properties to write there.
type cgroupDir struct {
	root  string // the hierarchy's mount point
	path  string
	depth int      // number of elements of the parent cgroup path
	ctrls []string // v1: the controllers of this hierarchy
	props []CgroupProperty
}

// cgroupPlan is the cgroup configuration built from --cgroup, checked
// against the host before anything is created.
type cgroupPlan struct {
	version int
	dirs    []*cgroupDir
}

// planCgroups maps each --cgroup property to the hierarchy that holds its
// controller: for v1 the mount whose options name the controller, for v2
// the unified mount, whose cgroup.controllers must list it.
func planCgroups(cfg *Config, version int, mounts []mountEntry) (*cgroupPlan, error) {
	p := &cgroupPlan{version: version}
	if len(cfg.Cgroups) == 0 {
		return p, nil
	}
	depth := 0
	for _, e := range strings.Split(cfg.ParentCgroup, "/") {
		if e != "" {
			depth++
		}
	}
	dirFor := func(root string, ctrls []string) *cgroupDir {
		path := filepath.Join(root, cfg.ParentCgroup, cfg.ID)
		for _, d := range p.dirs {
			if d.path == path {
				return d
			}
		}
		d := &cgroupDir{root: root, path: path, depth: depth, ctrls: ctrls}
		p.dirs = append(p.dirs, d)
		return d
	}
	switch version {
	case 1:
		var v1 []mountEntry
		for _, m := range mounts {
			if !m.v2 {
				v1 = append(v1, m)
			}
		}
		if len(v1) == 0 {
			return nil, errors.New("Hierarchy not found: No hierarchy found for this cgroup version.")
		}
		for _, prop := range cfg.Cgroups {
			c := prop.controller()
			i := slices.IndexFunc(v1, func(m mountEntry) bool { return slices.Contains(m.options, c) })
			if i < 0 {
				return nil, fmt.Errorf("Controller %s is unavailable", c)
			}
			d := dirFor(v1[i].dir, v1[i].options)
			d.props = append(d.props, prop)
		}
	case 2:
		root, err := unifiedMount(mounts)
		if err != nil {
			return nil, err
		}
		avail := map[string]bool{}
		if b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil {
			for _, c := range strings.Fields(string(b)) {
				avail[c] = true
			}
		}
		for _, prop := range cfg.Cgroups {
			if c := prop.controller(); !avail[c] {
				return nil, fmt.Errorf("Controller %s is unavailable", c)
			}
			d := dirFor(root, nil)
			d.props = append(d.props, prop)
		}
	}
	return p, nil
}

// setup creates the cgroups, writes the values, then moves this process
// (all its threads: cgroup.procs, not v1's per-thread tasks file) into
// them. Each property's values are written before any process joins,
// because some controllers (cpuset) refuse tasks until they are set.
func (p *cgroupPlan) setup(u *undo, orig map[string]string) error {
	for _, d := range p.dirs {
		if err := mkdirAllTracked(d.path, 0o755, u); err != nil {
			return err
		}
		enabled := map[string]bool{}
		for _, prop := range d.props {
			if p.version == 1 {
				if err := inheritFromParent(d.path, prop.File, d.depth); err != nil {
					return err
				}
			} else if c := prop.controller(); !enabled[c] {
				if err := enableController(d.root, filepath.Dir(d.path), c); err != nil {
					return err
				}
				enabled[c] = true
			}
			if err := writeLine(filepath.Join(d.path, prop.File), prop.Value); err != nil {
				return err
			}
		}
	}
	for _, d := range p.dirs {
		if err := attach(d.path, originalCgroup(orig, d), u); err != nil {
			return err
		}
	}
	return nil
}

// attach moves this process into the cgroup at path. Undo moves it back
// into back, its original cgroup in that hierarchy, because a cgroup with a
// process in it cannot be removed.
func attach(path, back string, u *undo) error {
	if err := writeLine(filepath.Join(path, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return err
	}
	u.push("move back to cgroup "+back, func() error {
		if back == "" {
			return errors.New("the original cgroup is unknown")
		}
		return os.WriteFile(filepath.Join(back, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	})
	return nil
}

// moveToParent is Firecracker's cgroup v2 rule without --cgroup: if the
// parent cgroup exists, the jailer moves itself there and creates nothing.
func moveToParent(cfg *Config, mounts []mountEntry, u *undo, orig map[string]string) error {
	root, err := unifiedMount(mounts)
	if err != nil {
		return err
	}
	parent := filepath.Join(root, cfg.ParentCgroup)
	if _, err := os.Stat(parent); err != nil {
		return nil
	}
	if err := os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("Failed to move process to cgroup (%s): %s.\nHint: If you intended to create a child cgroup under %s, pass any --cgroup parameters.",
			parent, logger.OSErrorText(err), parent)
	}
	back := ""
	if rel, ok := orig["0:"]; ok {
		back = filepath.Join(root, rel)
	}
	u.push("move back to cgroup "+back, func() error {
		if back == "" {
			return errors.New("the original cgroup is unknown")
		}
		return os.WriteFile(filepath.Join(back, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	})
	return nil
}

// readSelfCgroups reads /proc/self/cgroup into a map from "<controllers>:"
// to the cgroup path ("0:" holds the v2 path, keyed by the empty controller
// list of the "0::/path" line). Undo uses it to move the process back.
func readSelfCgroups(path string) map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && ctrls == "" {
			out["0:"] = p
		} else {
			out[ctrls+":"] = p
		}
	}
	return out
}

// originalCgroup is the directory of this process's cgroup in d's
// hierarchy before the jailer moved it.
func originalCgroup(orig map[string]string, d *cgroupDir) string {
	if d.ctrls == nil {
		if p, ok := orig["0:"]; ok {
			return filepath.Join(d.root, p)
		}
		return ""
	}
	for k, p := range orig {
		for _, c := range strings.Split(strings.TrimSuffix(k, ":"), ",") {
			if c != "" && slices.Contains(d.ctrls, c) {
				return filepath.Join(d.root, p)
			}
		}
	}
	return ""
}

// enableController writes +controller to cgroup.subtree_control from the
// hierarchy root down to dir, so that dir's children may use it.
func enableController(root, dir, controller string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("Failed to write to %s: not below the cgroup hierarchy %s", dir, root)
	}
	cur := root
	chain := []string{root}
	if rel != "." {
		for _, e := range strings.Split(rel, "/") {
			cur = filepath.Join(cur, e)
			chain = append(chain, cur)
		}
	}
	for _, d := range chain {
		f := filepath.Join(d, "cgroup.subtree_control")
		if _, err := os.Stat(f); err != nil {
			continue
		}
		if err := writeLine(f, "+"+controller); err != nil {
			return err
		}
	}
	return nil
}

// inheritFromParent copies a cgroup v1 file's value from the parent cgroup
// into the new one before the user's value is written, filling an empty
// parent from its own parent first (up to depth levels). cpuset.cpus and
// cpuset.mems start empty in a new v1 cgroup, and a cpuset with empty ones
// accepts no tasks.
func inheritFromParent(path, file string, depth int) error {
	parentFile := filepath.Join(filepath.Dir(path), file)
	line, err := readLine(parentFile)
	if err != nil {
		return err
	}
	if line == "" {
		if depth > 0 {
			// Another jailer may fill the parent at the same time: only the
			// value read afterwards counts.
			_ = inheritFromParent(filepath.Dir(path), file, depth-1)
			if line, err = readLine(parentFile); err != nil {
				return err
			}
		}
		if line == "" {
			return fmt.Errorf("Failed to inherit cgroups configurations from file %s in path %s", file, path)
		}
	}
	return writeLine(filepath.Join(path, file), line)
}

// readLine reads a cgroup file without its final newline.
func readLine(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("Failed to read file %s into a string: %s", path, logger.OSErrorText(err))
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// writeLine writes value and a newline to an existing cgroup file in one
// write. Unlike os.WriteFile it never creates the file, so a misspelt
// property fails with "No such file or directory".
func writeLine(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.Write([]byte(value + "\n"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("Failed to write to %s: %s", path, logger.OSErrorText(err))
	}
	return nil
}

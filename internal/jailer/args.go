package jailer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/squib-vmm/squib/internal/cli"
	"github.com/squib-vmm/squib/internal/logger"
)

// DefaultChrootBase is Firecracker's default --chroot-base-dir.
const DefaultChrootBase = "/srv/jailer"

// defaultNoFile is the RLIMIT_NOFILE the jailer sets when --resource-limit
// does not, as Firecracker does.
const defaultNoFile = 2048

// parser describes the jailer's command line, flag for flag Firecracker's
// jailer, except that --cgroup-version has no default: it is detected.
func parser() *cli.Parser {
	return cli.NewParser(
		cli.Arg{Name: "id", TakesValue: true, Required: true,
			Help: "Jail ID: 1 to 64 letters, digits or hyphens; also passed to the VMM as --id."},
		cli.Arg{Name: "exec-file", TakesValue: true, Required: true,
			Help: "File path to exec into (the squib binary); it is copied into the jail."},
		cli.Arg{Name: "uid", TakesValue: true, Required: true,
			Help: "The user identifier the jailer switches to before exec."},
		cli.Arg{Name: "gid", TakesValue: true, Required: true,
			Help: "The group identifier the jailer switches to before exec."},
		cli.Arg{Name: "chroot-base-dir", TakesValue: true, Default: DefaultChrootBase, HasDefault: true,
			Help: "The base folder where chroot jails are located: <base>/<exec file name>/<id>/root."},
		cli.Arg{Name: "netns", TakesValue: true,
			Help: "Path to the network namespace this microVM should join."},
		cli.Arg{Name: "daemonize",
			Help: "Daemonize the jailer before exec: a new session, with the standard I/O file descriptors on /dev/null."},
		cli.Arg{Name: "new-pid-ns",
			Help: "Exec into a new PID namespace, where the VMM is PID 1."},
		cli.Arg{Name: "cgroup", AllowMultiple: true,
			Help: "Cgroup file and value to be set by the jailer, as <cgroup_file>=<value> (e.g. cpu.max=\"50000 100000\" or memory.max=1G). Can be used multiple times."},
		cli.Arg{Name: "resource-limit", AllowMultiple: true,
			Help: "Resource limit to be set by the jailer, as <resource>=<value>: fsize (largest file the process may create, in bytes) or no-file (one more than the largest file descriptor number; default 2048). Can be used multiple times."},
		cli.Arg{Name: "cgroup-version", TakesValue: true,
			Help: "Select the cgroup version used by the jailer: 1 or 2. Default: detected, 2 when cgroup2 is mounted at /sys/fs/cgroup (or when only a cgroup2 hierarchy is mounted), else 1."},
		cli.Arg{Name: "parent-cgroup", TakesValue: true,
			Help: "Parent cgroup in which the cgroup of this microVM will be placed, relative to the hierarchy root (default: the exec file name)."},
		cli.Arg{Name: "version", Help: "Print the binary version number."},
	)
}

// Config is a validated jailer command line.
type Config struct {
	ID string
	// ExecFile is the canonical path of --exec-file; ExecName its last
	// element, which names the jail directory and the binary inside it.
	ExecFile, ExecName string
	// ChrootBase is the canonical --chroot-base-dir.
	ChrootBase string
	UID, GID   uint32
	NetNS      string // "" when absent
	Daemonize  bool
	NewPIDNS   bool
	// CgroupVersion is 1 or 2, or 0 when it is to be detected.
	CgroupVersion int
	// ParentCgroup is relative to the hierarchy root; it defaults to
	// ExecName.
	ParentCgroup string
	Cgroups      []CgroupProperty
	Limits       Limits
	// Extra is what followed "--": the VMM's own arguments.
	Extra []string
}

// CgroupProperty is one --cgroup file=value.
type CgroupProperty struct {
	File, Value string
}

// controller is the part of the file name before the first dot
// ("memory" for memory.max).
func (p CgroupProperty) controller() string {
	c, _, _ := strings.Cut(p.File, ".")
	return c
}

// ChrootDir is <chroot base>/<exec name>/<id>/root, the jail's root.
func (c *Config) ChrootDir() string {
	return filepath.Join(c.ChrootBase, c.ExecName, c.ID, "root")
}

// request is what the command line asks for: a help or version text, or
// a jail described by Config.
type request struct {
	help, version bool
	cfg           *Config
}

// parseArgs parses and validates argv (without the program name) in
// Firecracker's order. It only reads the file system (to canonicalise the
// exec file and the chroot base); it changes nothing. Every error's text is
// what the jailer prints.
func parseArgs(argv []string) (request, error) {
	args, err := parser().Parse(argv)
	if err != nil {
		return request{}, fmt.Errorf("Failed to parse arguments: %w", err)
	}
	if args.HelpRequested() {
		return request{help: true}, nil
	}
	if args.VersionRequested() {
		return request{version: true}, nil
	}
	c := &Config{Extra: args.Extra()}

	c.ID, _ = args.Value("id")
	if err := validateID(c.ID); err != nil {
		return request{}, fmt.Errorf("Invalid instance ID: %w", err)
	}

	exec, _ := args.Value("exec-file")
	if c.ExecFile, err = canonicalize(exec); err != nil {
		return request{}, err
	}
	if fi, err := os.Stat(c.ExecFile); err != nil || !fi.Mode().IsRegular() {
		return request{}, fmt.Errorf("%s is not a file", c.ExecFile)
	}
	c.ExecName = filepath.Base(c.ExecFile)

	base, _ := args.Value("chroot-base-dir")
	if c.ChrootBase, err = canonicalize(base); err != nil {
		return request{}, err
	}
	if fi, err := os.Stat(c.ChrootBase); err != nil || !fi.IsDir() {
		return request{}, fmt.Errorf("%s is not a directory", c.ChrootBase)
	}

	uid, _ := args.Value("uid")
	if c.UID, err = parseID(uid); err != nil {
		return request{}, fmt.Errorf("Invalid uid: %s", uid)
	}
	gid, _ := args.Value("gid")
	if c.GID, err = parseID(gid); err != nil {
		return request{}, fmt.Errorf("Invalid gid: %s", gid)
	}

	c.NetNS, _ = args.Value("netns")
	c.Daemonize = args.Flag("daemonize")
	c.NewPIDNS = args.Flag("new-pid-ns")

	c.ParentCgroup = c.ExecName
	if p, ok := args.Value("parent-cgroup"); ok {
		c.ParentCgroup = p
	}
	if !validRelPath(c.ParentCgroup) {
		return request{}, errors.New("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'")
	}

	if v, ok := args.Value("cgroup-version"); ok {
		switch v {
		case "1":
			c.CgroupVersion = 1
		case "2":
			c.CgroupVersion = 2
		default:
			return request{}, fmt.Errorf("%s is an invalid cgroup version specifier", v)
		}
	}

	for _, cg := range args.Values("cgroup") {
		parts := strings.Split(cg, "=")
		if len(parts) != 2 || parts[1] == "" {
			return request{}, fmt.Errorf("Invalid format for cgroups: %s", cg)
		}
		// Cgroup interface files sit directly in the cgroup directory, so a
		// name with a slash could only reach outside it.
		if parts[0] == "" || parts[0] == "." || parts[0] == ".." || strings.Contains(parts[0], "/") {
			return request{}, fmt.Errorf("Cgroup invalid file: %s", cg)
		}
		p := CgroupProperty{File: parts[0], Value: parts[1]}
		if !strings.Contains(p.File, ".") {
			return request{}, fmt.Errorf("Cgroup invalid file: %s", p.File)
		}
		c.Cgroups = append(c.Cgroups, p)
	}

	if c.Limits, err = parseLimits(args.Values("resource-limit")); err != nil {
		return request{}, err
	}
	return request{cfg: c}, nil
}

// validateID applies the instance ID rule of squib's own command line
// (internal/app): 1 to 64 ASCII letters, digits or hyphens. Firecracker
// also accepts non-ASCII letters; squib would then refuse the --id the
// jailer passes on, after the jail was built, so the jailer refuses first.
func validateID(id string) error {
	if len(id) < 1 || len(id) > 64 {
		return fmt.Errorf("Invalid len (%d);  the length must be between 1 and 64", len(id))
	}
	for i, c := range []rune(id) {
		if !(c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("Invalid char (%c) at position %d", c, i)
		}
	}
	return nil
}

// parseID parses a uid or gid as an unsigned decimal 32-bit number.
// (uint32)-1 is refused: to setresuid it means "leave unchanged".
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, err
	}
	if n == 1<<32-1 {
		return 0, strconv.ErrRange
	}
	return uint32(n), nil
}

// validRelPath reports whether p is a relative path without "." or ".."
// elements, so that joining it to a hierarchy root stays below that root.
func validRelPath(p string) bool {
	if strings.HasPrefix(p, "/") {
		return false
	}
	for _, e := range strings.Split(p, "/") {
		if e == "." || e == ".." {
			return false
		}
	}
	return true
}

// canonicalize resolves p to an absolute path without symbolic links; the
// path must exist, as with Rust's fs::canonicalize.
func canonicalize(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("Failed to canonicalize path %s: %s", p, logger.OSErrorText(err))
	}
	return abs, nil
}

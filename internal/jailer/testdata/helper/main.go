// Command helper stands in for the VMM in the jailer's integration tests:
// run inside the jail, it reports what it sees as JSON in /run/facts.json
// (and on stdout), then exits 0, or with "hold" among its arguments waits
// to be killed so that the test can look at it from outside.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Node describes one path in the jail.
type Node struct {
	Mode  uint32 `json:"mode"` // st_mode, type bits included
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

// Facts is what the helper reports.
type Facts struct {
	Args    []string         `json:"args"`
	Env     []string         `json:"env"`
	PID     int              `json:"pid"`
	PPID    int              `json:"ppid"`
	SID     int              `json:"sid"`
	UID     [3]int           `json:"uid"` // real, effective, saved
	GID     [3]int           `json:"gid"`
	Groups  []int            `json:"groups"`
	Cwd     string           `json:"cwd"`
	Root    []string         `json:"root"` // names in /
	Nodes   map[string]*Node `json:"nodes"`
	NoFile  [2]uint64        `json:"nofile"` // soft, hard
	FSize   [2]uint64        `json:"fsize"`
	OpenFDs []int            `json:"open_fds"`
	Stdio   []*Node          `json:"stdio"`
	CapEff  uint64           `json:"cap_eff"`
}

func main() {
	var f Facts
	f.Args = os.Args
	f.Env = os.Environ()
	f.PID, f.PPID = os.Getpid(), os.Getppid()
	f.SID, _ = unix.Getsid(0)
	f.UID[0], f.UID[1], f.UID[2] = unix.Getresuid()
	f.GID[0], f.GID[1], f.GID[2] = unix.Getresgid()
	f.Groups, _ = unix.Getgroups()
	f.Cwd, _ = unix.Getwd()
	if ents, err := os.ReadDir("/"); err == nil {
		for _, e := range ents {
			f.Root = append(f.Root, e.Name())
		}
	}
	f.Nodes = map[string]*Node{}
	for _, p := range []string{"/", "/dev", "/dev/net", "/run", os.Args[0], os.Args[0] + ".pid",
		"/dev/kvm", "/dev/net/tun", "/dev/urandom", "/dev/userfaultfd"} {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			f.Nodes[p] = node(&st)
		}
	}
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	f.NoFile = [2]uint64{rl.Cur, rl.Max}
	unix.Getrlimit(unix.RLIMIT_FSIZE, &rl)
	f.FSize = [2]uint64{rl.Cur, rl.Max}
	// Descriptors the runtime opened itself are close-on-exec and were
	// opened after start; those inherited are what the test looks for.
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			f.OpenFDs = append(f.OpenFDs, fd)
		}
	}
	for fd := 0; fd < 3; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			f.Stdio = append(f.Stdio, node(&st))
		} else {
			f.Stdio = append(f.Stdio, nil)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) == nil {
		f.CapEff = uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	}

	b, _ := json.Marshal(f)
	if err := os.WriteFile("/run/facts.json.tmp", b, 0o600); err == nil {
		os.Rename("/run/facts.json.tmp", "/run/facts.json")
	} else {
		fmt.Fprintln(os.Stderr, "helper:", err)
	}
	fmt.Println(string(b))
	if slices.Contains(os.Args, "hold") {
		for {
			time.Sleep(time.Hour)
		}
	}
}

func node(st *unix.Stat_t) *Node {
	return &Node{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}
}

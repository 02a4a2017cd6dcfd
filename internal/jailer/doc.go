// Package jailer is squib-jailer: Firecracker's jailer, flag for flag and
// step for step, for running squib (or firecracker) confined.
//
// The steps, in Firecracker's order:
//
//  1. Mark every inherited descriptor from 3 up close-on-exec and clear the
//     environment.
//  2. Parse and validate the command line (internal/cli, Firecracker's
//     rules): the ID, the exec file and chroot base (canonicalised), the
//     uid and gid, the cgroup and resource-limit arguments.
//  3. The jail is <chroot base>/<exec file name>/<id>/root.
//  4. Cgroups: the version is --cgroup-version or, when absent, detected
//     from /proc/mounts (2 when cgroup2 is mounted at /sys/fs/cgroup).
//     Each --cgroup controller must be mounted (v1) or listed in the
//     unified root's cgroup.controllers (v2). With v2 and no --cgroup the
//     jailer moves itself into <parent cgroup> if that exists.
//  5. Copy the exec file into the jail, owned by uid:gid, refusing a
//     destination that is a hard link.
//  6. Join --netns, set the resource limits (RLIMIT_NOFILE 2048 unless
//     given), create <hierarchy>/<parent>/<id>, write the values and move
//     the process in.
//  7. unshare(CLONE_NEWNS), make / a recursive slave, bind-mount the jail
//     onto itself, pivot_root into it and detach the old root.
//  8. Create /, /dev, /dev/net and /run (0700) and the device nodes
//     /dev/net/tun, /dev/kvm, /dev/urandom and /dev/userfaultfd (0600),
//     all owned by uid:gid.
//  9. Exec /<exec name> --id <id> --start-time-us <t> --start-time-cpu-us
//     <t> --parent-cpu-time-us <t> <arguments after -->, as uid:gid with
//     no supplementary groups, after writing /<exec name>.pid.
//
// # Threads
//
// unshare, setns, pivot_root, chdir and the root directory are per thread
// in Linux, and a Go program has several threads before main runs. Main
// therefore locks the main goroutine to its thread first and never unlocks
// it, and every step that changes the thread's view (joining the network
// namespace, the mount namespace and pivot_root, then the file operations
// inside the jail) and the final exec run on that goroutine. execve from
// that thread replaces the whole process, keeping that thread's namespaces
// and root. The runtime neither runs other goroutines on a locked thread
// nor creates new threads from it (it uses a template thread), so the other
// threads keep the host's view, which the clean-up on failure relies on: it
// runs on another goroutine and removes host paths. Changes of user and
// group IDs go through the syscall package, which applies them to every
// thread. The cgroup move writes cgroup.procs, which moves all threads,
// also on cgroup v1 (Firecracker writes the per-thread tasks file).
//
// Go cannot fork without exec, so --new-pid-ns and --daemonize start the
// VMM as a child (os/exec with CLONE_NEWPID, setsid, the credentials and
// /dev/null as needed) from the locked thread, whose namespaces and root
// the child inherits, instead of forking and then exec'ing.
//
// # Failures
//
// Every failure prints one message naming the step and the path (the text
// is Firecracker's where it has one) and exits with status 1. Before that,
// what the run made is undone in reverse order: device nodes, folders,
// the binary and PID file it wrote, the directories it created (never a
// directory that existed), and the cgroups it created, after moving the
// process back to its original cgroups. Values written into existing
// cgroups (subtree_control, inherited cpuset values) are left as they are.
// In-place exec keeps the saved user ID at 0 until execve so that even a
// failed exec can be cleaned up.
package jailer

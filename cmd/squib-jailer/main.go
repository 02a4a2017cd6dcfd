// Command squib-jailer is a Firecracker-compatible jailer for squib: it
// builds a chroot jail, cgroups and resource limits for one microVM, drops
// to an unprivileged user and execs the VMM. See docs/jailer.md.
package main

import (
	"os"

	"github.com/squib-vmm/squib/internal/jailer"
)

func main() {
	os.Exit(jailer.Main(os.Args[1:], os.Stdout, os.Stderr))
}

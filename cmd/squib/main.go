// Command squib is a Firecracker-compatible microVM monitor: the same
// command line, REST API and config file as the firecracker binary.
package main

import (
	"os"

	"github.com/squib-vmm/squib/internal/app"
	"github.com/squib-vmm/squib/internal/seccomp"
)

func main() {
	os.Exit(app.Main(os.Args[1:], app.Env{Stdout: os.Stdout, Stderr: os.Stderr, InstallSeccomp: seccomp.Install}))
}

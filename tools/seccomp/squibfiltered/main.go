// Command squibfiltered is squib with the default seccomp filter installed
// first thing in main, before squib's own start-up. `trace.sh --check`
// runs the end-to-end suite with it in place of squib: the suite passing
// shows that the filter allows everything squib does there, and a refused
// syscall shows up as exit code 148 and "Shutting down VM after
// intercepting a bad syscall (<nr>)." in squib's log. It is a test tool:
// squib itself installs the filter at the point internal/app chooses.
package main

import (
	"fmt"
	"os"

	"github.com/squib-vmm/squib/internal/app"
	"github.com/squib-vmm/squib/internal/seccomp"
)

func main() {
	prog, err := seccomp.Default().Compile()
	if err == nil {
		err = seccomp.Install(prog)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "squibfiltered:", err)
		os.Exit(1)
	}
	os.Exit(app.Main(os.Args[1:], app.Env{Stdout: os.Stdout, Stderr: os.Stderr}))
}

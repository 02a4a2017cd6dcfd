// Command squib-uffd-handler is an example page-fault handler for squib's
// (and Firecracker's) Uffd snapshot memory backend. It listens on a Unix
// socket, takes the userfaultfd and region list the VMM sends when it
// loads a snapshot with mem_backend {"backend_type": "Uffd",
// "backend_path": <socket>}, and serves every guest page from the
// snapshot's memory file on first touch, zero-filling pages the balloon
// removed. It exits when the VMM's connection closes.
//
// Usage: squib-uffd-handler <socket path> <memory file>
package main

import (
	"fmt"
	"log"
	"os"

	"github.com/squib-vmm/squib/internal/uffd"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: squib-uffd-handler <socket path> <memory file>")
		os.Exit(2)
	}
	logger := log.New(os.Stderr, "squib-uffd-handler: ", 0)
	if err := uffd.ListenAndServe(os.Args[1], os.Args[2], logger); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}

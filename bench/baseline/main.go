// Command baseline is the smallest Go program apibench can measure: it
// serves GET / (and a bodiless 204 to any PUT) on --api-sock with net/http
// and nothing else. Its start-up
// time and idle memory are the floor that the Go runtime and net/http set
// for squib, which separates their cost from squib's own.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	sock := ""
	for i, a := range os.Args {
		if a == "--api-sock" && i+1 < len(os.Args) {
			sock = os.Args[i+1]
		}
	}
	if sock == "" {
		fmt.Fprintln(os.Stderr, "usage: baseline --api-sock PATH")
		os.Exit(2)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	body := []byte(`{"id":"anonymous-instance","state":"Not started","vmm_version":"1.17.0-dev","app_name":"Firecracker"}`)
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// PUT answers 204 like squib's PUT /machine-config, so apibench's
		// latency cases run unchanged against the floor.
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

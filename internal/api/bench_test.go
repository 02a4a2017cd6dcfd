package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/squib-vmm/squib/internal/api"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/vmm"
	"github.com/squib-vmm/squib/internal/vmm/vmmtest"
)

// These benchmarks time the handler alone (parse, log, route, answer),
// without the socket or HTTP/1.1 framing; bench/apibench measures the same
// requests end to end. They report figures and assert only correctness.

// newBenchServer returns a server in front of a running controller, built
// as squib's main builds it. The KVM builder is never reached: no request
// here boots a VM.
func newBenchServer(b *testing.B, level logger.Level) *api.Server {
	b.Helper()
	// The handler logs every request at Info, as squib does by default.
	// Send it to /dev/null rather than the benchmark's stdout, keeping the
	// formatting and write(2) cost in the figure. Benchmarks run after the
	// package's tests, so redirecting the process-wide logger here leaves
	// their output alone.
	devNull := os.DevNull
	if err := logger.Default.Configure(logger.Config{Path: &devNull, Level: &level}); err != nil {
		b.Fatal(err)
	}
	store := mmds.NewStore(api.DefaultMaxPayload)
	ctrl := vmm.NewController(vmm.Options{
		Builder: &vmmtest.Builder{},
		Hooks:   vmm.Hooks{Mmds: store},
	})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go ctrl.Run(ctx)
	return api.New(ctrl, api.Options{Mmds: store})
}

// benchGet serves GET path b.N times on one reused request.
func benchGet(b *testing.B, path string, level logger.Level) {
	srv := newBenchServer(b, level)
	req := httptest.NewRequest(http.MethodGet, path, nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s: status %d: %s", path, rec.Code, rec.Body)
		}
	}
}

func BenchmarkGetRoot(b *testing.B) { benchGet(b, "/", logger.DefaultLevel) }

// BenchmarkGetRootLogOff is GetRoot with squib's --level Off: the
// difference is what the two per-request log lines cost.
func BenchmarkGetRootLogOff(b *testing.B) { benchGet(b, "/", logger.Off) }

func BenchmarkGetVMConfig(b *testing.B) { benchGet(b, "/vm/config", logger.DefaultLevel) }

// BenchmarkPutMachineConfig includes the round trip to the controller
// goroutine, which every mutation makes.
func BenchmarkPutMachineConfig(b *testing.B) {
	srv := newBenchServer(b, logger.DefaultLevel)
	body := []byte(`{"vcpu_count":2,"mem_size_mib":256}`)
	rd := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPut, "/machine-config", rd)
	req.Body = io.NopCloser(rd)
	b.ReportAllocs()
	for b.Loop() {
		// Rewind the one body reader instead of allocating a request per
		// iteration, so the figure is the handler's.
		rd.Reset(body)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent {
			b.Fatalf("PUT /machine-config: status %d: %s", rec.Code, rec.Body)
		}
	}
}

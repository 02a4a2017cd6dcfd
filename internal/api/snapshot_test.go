package api

import (
	"strings"
	"testing"
	"time"
)

// TestFailedLoadEndsProcess: a snapshot load that fails past the
// boot-resources check is answered with a 400, then the process is told
// to exit with code 1, as Firecracker exits.
func TestFailedLoadEndsProcess(t *testing.T) {
	h := newHarness(t)
	rec := h.do("PUT", "/snapshot/load", `{"snapshot_path":"/nope","mem_backend":{"backend_type":"File","backend_path":"/nope"}}`)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "Failed to restore from snapshot") {
		t.Fatalf("load: %d %s", rec.Code, rec.Body)
	}
	select {
	case code := <-h.ctrl.Exited():
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the process was not told to exit")
	}
}

// TestRefusedLoadKeepsProcess: a load refused because boot resources were
// configured is not fatal.
func TestRefusedLoadKeepsProcess(t *testing.T) {
	h := newHarness(t)
	if rec := h.do("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`); rec.Code != 204 {
		t.Fatalf("machine-config: %d %s", rec.Code, rec.Body)
	}
	rec := h.do("PUT", "/snapshot/load", `{"snapshot_path":"/nope","mem_backend":{"backend_type":"File","backend_path":"/nope"}}`)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "not allowed after configuring boot-specific resources") {
		t.Fatalf("load: %d %s", rec.Code, rec.Body)
	}
	select {
	case code := <-h.ctrl.Exited():
		t.Fatalf("the process was told to exit (%d)", code)
	case <-time.After(100 * time.Millisecond):
	}
}

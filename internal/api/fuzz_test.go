package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzRequest feeds arbitrary methods, paths and bodies through the whole
// request path (routing, ID checks, strict decoding, validation, the
// controller). Whatever a client sends, squib must answer with one of
// Firecracker's statuses and never panic.
func FuzzRequest(f *testing.F) {
	seeds := []struct{ method, path, body string }{
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256}`},
		{"PATCH", "/machine-config", `{"smt":true}`},
		{"PUT", "/drives/root", `{"drive_id":"root","path_on_host":"/dev/null","is_root_device":true,"rate_limiter":{"ops":{"size":1,"refill_time":1}}}`},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"x","guest_mac":"06:00:00:00:00:01"}`},
		{"PUT", "/mmds", `{"a":{"b":[1,2,{"c":null}]}}`},
		{"PATCH", "/mmds", `{"a":null}`},
		{"PUT", "/mmds/config", `{"network_interfaces":["eth0"],"version":"V2","ipv4_address":"169.254.1.1"}`},
		{"PUT", "/cpu-config", `{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0b0","flags":0,"modifiers":[{"register":"ebx","bitmap":"0bx1"}]}]}`},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_type":"Uffd","backend_path":"u"}}`},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`},
		{"PATCH", "/balloon/hinting/start", ``},
		{"GET", "/balloon/statistics", ``},
		{"DELETE", "/pmem/p_1", ``},
		{"PUT", "/drives/ü", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, []byte(s.body))
	}
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		req, err := http.NewRequest(method, "http://localhost/", bytes.NewReader(body))
		if err != nil {
			return // not a request net/http would hand to the server
		}
		req.URL.Path = "/" + path
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, req)
		switch w.Code {
		case 200, 204, 400, 413:
		default:
			t.Fatalf("%s %q: status %d", method, path, w.Code)
		}
	})
}

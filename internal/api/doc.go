// Package api serves Firecracker's REST API on a Unix socket and turns each
// HTTP request into a typed, validated vmm.Request.
//
// Requests take one of three paths (see docs/api.md):
//
//   - Read-only fast path: GET /, /version, /vm/config, /machine-config,
//     /balloon, /balloon/statistics, /mmds and /hotplug/memory answer from
//     the controller's published vmm.View (an atomic pointer) and never wait
//     on the controller, so a stuck mutation cannot delay a liveness probe.
//   - Mutating path: every PUT, PATCH and DELETE is strictly decoded,
//     converted to a typed request, checked against the VM's phase and handed
//     to the single controller goroutine with a per-class timeout.
//   - Fallback: any other method or path gets 400 with Firecracker's
//     "Invalid request method and/or path" message. There is no 404 or 405.
package api

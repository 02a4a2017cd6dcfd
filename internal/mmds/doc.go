// Package mmds implements squib's microVM metadata service (MMDS) the way
// Firecracker does: the JSON data store that the API edits (PUT, PATCH and
// GET /mmds), the PUT /mmds/config model and its validation, the V2 session
// token authority, and the guest-facing request handler.
//
// The guest-facing handler is transport independent: Service.Respond takes a
// request that has already been parsed (by the guest network stack, which
// arrives with the virtio-net device, or by net/http through
// Service.ServeHTTP) and returns the status, headers and body Firecracker
// would send. Parse-level failures (bad request line, Content-Length larger
// than the body, ...) belong to the transport and never reach Respond.
//
// Behaviour, status codes and message texts follow Firecracker's
// src/vmm/src/mmds (data_store.rs, mod.rs, token.rs) and
// src/vmm/src/vmm_config/mmds.rs. One deliberate difference: numbers in the
// data store are kept as the exact literal the client sent, where serde_json
// would reformat floats (1e2 becomes 100.0).
//
// Concurrency: Store, TokenAuthority and Service are safe for concurrent
// use. Store readers never block: every change publishes an immutable
// snapshot through an atomic pointer.
package mmds

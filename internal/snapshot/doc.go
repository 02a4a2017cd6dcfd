// Package snapshot frames squib's snapshot state files: a magic number
// naming the architecture, the data-format version, the encoded state and
// a CRC64 trailer (the Jones polynomial, as Firecracker's), and writes
// them under a temporary name that is renamed into place only once the
// whole file is on disk, so a crash never leaves a half-written snapshot
// where a complete one is expected.
//
// The state itself is squib's own encoding (the machine package's JSON);
// Firecracker's bitcode encoding is Rust-specific, so squib snapshots are
// not byte-compatible with Firecracker's, but the framing, the version
// rules and the memory file are the same.
package snapshot

// Package logger is squib's copy of Firecracker's logger: same line format,
// levels, module filter, output handling and per-call-site rate limiting,
// so that tools which parse or grep Firecracker logs work unchanged.
//
// A line is
//
//	<local time YYYY-MM-DDTHH:MM:SS.nnnnnnnnn> [<instance-id>:<thread>[:<LEVEL>][:<file>:<line>]] <message>
//
// where LEVEL (ERROR, WARN, INFO, DEBUG, TRACE) appears only with
// show_level and file:line (relative to the repository root) only with
// show_log_origin. Go has no thread names, so each Handle carries a logical
// one: "main" (start-up and the VMM event loop), "fc_api", "fc_vcpu <n>".
//
// Every line is built in a buffer and written with a single write(2) to
// stdout or to a file or FIFO opened non-blocking; a failed write is counted
// in the metric logger.missed_log_count and otherwise ignored, never
// blocking the caller.
//
// Usage:
//
//	var log = logger.For("main", "devices/virtio/block")
//	log.Infof("drive %s attached", id)
//	log.RateLimited(&badDescLimiter).Warnf("bad descriptor: %v", err) // guest-triggerable
//
// The package also holds helpers shared by everything that must reproduce
// Firecracker's text: OSErrorText renders Go errors like Rust's io::Error
// ("No such file or directory (os error 2)"), and Sink opens and writes
// files the way Firecracker's log and metrics outputs do.
package logger

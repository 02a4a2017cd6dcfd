// Package metrics is squib's copy of Firecracker's metrics system: the
// same groups, counter names, key order and counter semantics, written as
// one JSON object per line, so that consumers of Firecracker metrics (and
// Firecracker's own schema check, tests/host_tools/fcmetrics.py) accept
// squib's output unchanged.
//
// A line starts with "utc_timestamp_ms", then the optional "id" and
// "properties", then the groups in Firecracker's order. Per-device groups
// ("block_<id>", "net_<id>", "pmem_<id>") come just before their family's
// aggregate ("block", "net", "pmem"); the fixed groups, aggregates
// included, are always present, all zero when no such device exists.
//
// Two kinds of counter exist. An IncMetric prints its growth since the
// previous line and so restarts from zero after every write; counting is a
// single atomic add, cheap enough for vCPU exit paths. A StoreMetric prints
// its current value (start-up times, latencies, signal flags).
//
// Default is the process-wide instance that the whole VMM counts into:
//
//	metrics.Default.PutAPIRequests.DriveCount.Inc()
//	blk := metrics.Default.Block(driveID) // keep the pointer in the device
//	blk.ReadBytes.Add(n)
//
// Lines are written to the path given once by --metrics-path or PUT
// /metrics: at boot and then every 60 s (StartPeriodic, paused with the
// VM), on FlushMetrics, on VMM teardown and in fatal signal handlers (the
// callers' Write).
package metrics

package metrics

// The structs below are Firecracker's metric groups. Field order is output
// order and json tags are the output names, exactly as in Firecracker's
// serde structs (src/vmm/src/logger/metrics.rs and the devices' metrics.rs);
// where fcmetrics.py or the docs list fields in another order, the structs
// win because they are what Firecracker prints. Only IncMetric, StoreMetric
// and LatencyAgg fields with a json tag are emitted.

// APIServerMetrics is the "api_server" group.
type APIServerMetrics struct {
	ProcessStartupTimeUS    StoreMetric `json:"process_startup_time_us"`     // wall time from --start-time-us to API ready
	ProcessStartupTimeCPUUS StoreMetric `json:"process_startup_time_cpu_us"` // CPU time from --start-time-cpu-us, plus --parent-cpu-time-us
}

// BalloonMetrics is the "balloon" group.
type BalloonMetrics struct {
	ActivateFails       IncMetric `json:"activate_fails"`         // failed activations
	InflateCount        IncMetric `json:"inflate_count"`          // inflations
	StatsUpdatesCount   IncMetric `json:"stats_updates_count"`    // statistics updates from the driver
	StatsUpdateFails    IncMetric `json:"stats_update_fails"`     // failed statistics updates
	DeflateCount        IncMetric `json:"deflate_count"`          // deflations
	EventFails          IncMetric `json:"event_fails"`            // failed event handling
	FreePageReportCount IncMetric `json:"free_page_report_count"` // free page reports
	FreePageReportFreed IncMetric `json:"free_page_report_freed"` // memory freed by reporting
	FreePageReportFails IncMetric `json:"free_page_report_fails"` // failed reports
	FreePageHintCount   IncMetric `json:"free_page_hint_count"`   // free page hinting runs
	FreePageHintFreed   IncMetric `json:"free_page_hint_freed"`   // memory freed by hinting
	FreePageHintFails   IncMetric `json:"free_page_hint_fails"`   // failed hints
}

// BlockMetrics is one "block_<drive_id>" group; the "block" group sums all
// drives.
type BlockMetrics struct {
	ActivateFails              IncMetric  `json:"activate_fails"`                // failed activations
	CfgFails                   IncMetric  `json:"cfg_fails"`                     // failed config-space accesses
	NoAvailBuffer              IncMetric  `json:"no_avail_buffer"`               // queue had no available buffer
	EventFails                 IncMetric  `json:"event_fails"`                   // failed event handling
	ExecuteFails               IncMetric  `json:"execute_fails"`                 // failed requests
	InvalidReqsCount           IncMetric  `json:"invalid_reqs_count"`            // invalid requests
	FlushCount                 IncMetric  `json:"flush_count"`                   // flush requests
	QueueEventCount            IncMetric  `json:"queue_event_count"`             // queue notifications
	RateLimiterEventCount      IncMetric  `json:"rate_limiter_event_count"`      // rate limiter events
	UpdateCount                IncMetric  `json:"update_count"`                  // PATCH updates
	UpdateFails                IncMetric  `json:"update_fails"`                  // failed updates
	ReadBytes                  IncMetric  `json:"read_bytes"`                    // bytes read
	WriteBytes                 IncMetric  `json:"write_bytes"`                   // bytes written
	ReadCount                  IncMetric  `json:"read_count"`                    // successful reads
	WriteCount                 IncMetric  `json:"write_count"`                   // successful writes
	ReadAgg                    LatencyAgg `json:"read_agg"`                      // read durations
	WriteAgg                   LatencyAgg `json:"write_agg"`                     // write durations
	RateLimiterThrottledEvents IncMetric  `json:"rate_limiter_throttled_events"` // requests throttled by the rate limiter
	IOEngineThrottledEvents    IncMetric  `json:"io_engine_throttled_events"`    // io_uring submission queue full
	RemainingReqsCount         IncMetric  `json:"remaining_reqs_count"`          // requests left in the queue
}

// DeprecatedAPIMetrics is the "deprecated_api" group.
type DeprecatedAPIMetrics struct {
	DeprecatedHTTPAPICalls IncMetric `json:"deprecated_http_api_calls"` // requests using a deprecated feature
}

// GetAPIRequestsMetrics is the "get_api_requests" group.
type GetAPIRequestsMetrics struct {
	InstanceInfoCount  IncMetric `json:"instance_info_count"`  // GET /
	MachineCfgCount    IncMetric `json:"machine_cfg_count"`    // GET /machine-config
	MMDSCount          IncMetric `json:"mmds_count"`           // GET /mmds
	VmmVersionCount    IncMetric `json:"vmm_version_count"`    // GET /version
	HotplugMemoryCount IncMetric `json:"hotplug_memory_count"` // GET /hotplug/memory
}

// I8042Metrics is the "i8042" group.
type I8042Metrics struct {
	ErrorCount       IncMetric `json:"error_count"`        // errors
	MissedReadCount  IncMetric `json:"missed_read_count"`  // superfluous reads
	MissedWriteCount IncMetric `json:"missed_write_count"` // superfluous writes
	ReadCount        IncMetric `json:"read_count"`         // bytes read
	ResetCount       IncMetric `json:"reset_count"`        // resets (guest reboot requests)
	WriteCount       IncMetric `json:"write_count"`        // bytes written
}

// UartMetrics is the "uart" group (the serial console).
type UartMetrics struct {
	ErrorCount              IncMetric `json:"error_count"`                // errors
	FlushCount              IncMetric `json:"flush_count"`                // output flushes
	MissedReadCount         IncMetric `json:"missed_read_count"`          // reads that read nothing
	MissedWriteCount        IncMetric `json:"missed_write_count"`         // writes that wrote nothing
	ReadCount               IncMetric `json:"read_count"`                 // successful reads
	WriteCount              IncMetric `json:"write_count"`                // successful writes
	RateLimiterDroppedBytes IncMetric `json:"rate_limiter_dropped_bytes"` // output bytes dropped by the rate limiter
}

// LatenciesMetrics is the "latencies_us" group: durations of the last
// operation of each kind, in microseconds.
type LatenciesMetrics struct {
	FullCreateSnapshot    StoreMetric `json:"full_create_snapshot"`     // full snapshot, API level
	DiffCreateSnapshot    StoreMetric `json:"diff_create_snapshot"`     // diff snapshot, API level
	LoadSnapshot          StoreMetric `json:"load_snapshot"`            // snapshot load, API level
	PauseVM               StoreMetric `json:"pause_vm"`                 // pause, API level
	ResumeVM              StoreMetric `json:"resume_vm"`                // resume, API level
	VmmFullCreateSnapshot StoreMetric `json:"vmm_full_create_snapshot"` // full snapshot, VMM level
	VmmDiffCreateSnapshot StoreMetric `json:"vmm_diff_create_snapshot"` // diff snapshot, VMM level
	VmmLoadSnapshot       StoreMetric `json:"vmm_load_snapshot"`        // snapshot load, VMM level
	VmmPauseVM            StoreMetric `json:"vmm_pause_vm"`             // pause, VMM level
	VmmResumeVM           StoreMetric `json:"vmm_resume_vm"`            // resume, VMM level
}

// LoggerMetrics is the "logger" group.
type LoggerMetrics struct {
	MissedMetricsCount  IncMetric `json:"missed_metrics_count"`   // periodic metrics writes that failed
	MetricsFails        IncMetric `json:"metrics_fails"`          // failed metrics writes of any origin (never counted by Firecracker)
	MissedLogCount      IncMetric `json:"missed_log_count"`       // log lines that could not be written
	RateLimitedLogCount IncMetric `json:"rate_limited_log_count"` // log lines dropped by rate limiting
}

// MMDSMetrics is the "mmds" group.
type MMDSMetrics struct {
	RxAccepted           IncMetric `json:"rx_accepted"`           // frames diverted to MMDS
	RxAcceptedErr        IncMetric `json:"rx_accepted_err"`       // errors handling such frames
	RxAcceptedUnusual    IncMetric `json:"rx_accepted_unusual"`   // unusual events while handling them
	RxBadEth             IncMetric `json:"rx_bad_eth"`            // buffers that were not valid Ethernet
	RxInvalidToken       IncMetric `json:"rx_invalid_token"`      // GETs with an invalid token
	RxNoToken            IncMetric `json:"rx_no_token"`           // GETs without a token
	RxCount              IncMetric `json:"rx_count"`              // successful receives
	TxBytes              IncMetric `json:"tx_bytes"`              // bytes sent
	TxCount              IncMetric `json:"tx_count"`              // successful sends
	TxErrors             IncMetric `json:"tx_errors"`             // send errors
	TxFrames             IncMetric `json:"tx_frames"`             // frames sent
	ConnectionsCreated   IncMetric `json:"connections_created"`   // TCP connections accepted
	ConnectionsDestroyed IncMetric `json:"connections_destroyed"` // TCP connections cleaned up
}

// NetMetrics is one "net_<iface_id>" group; the "net" group sums all
// interfaces.
type NetMetrics struct {
	ActivateFails           IncMetric  `json:"activate_fails"`              // failed activations
	CfgFails                IncMetric  `json:"cfg_fails"`                   // failed config-space accesses
	NoRxAvailBuffer         IncMetric  `json:"no_rx_avail_buffer"`          // RX queue had no buffer
	NoTxAvailBuffer         IncMetric  `json:"no_tx_avail_buffer"`          // TX queue had no buffer
	EventFails              IncMetric  `json:"event_fails"`                 // failed event handling
	RxQueueEventCount       IncMetric  `json:"rx_queue_event_count"`        // RX queue notifications
	RxEventRateLimiterCount IncMetric  `json:"rx_event_rate_limiter_count"` // RX rate limiter events
	RxRateLimiterThrottled  IncMetric  `json:"rx_rate_limiter_throttled"`   // RX throttling events
	RxTapEventCount         IncMetric  `json:"rx_tap_event_count"`          // tap readable events
	RxBytesCount            IncMetric  `json:"rx_bytes_count"`              // bytes received
	RxPacketsCount          IncMetric  `json:"rx_packets_count"`            // packets received
	RxFails                 IncMetric  `json:"rx_fails"`                    // receive errors
	RxCount                 IncMetric  `json:"rx_count"`                    // successful receive operations
	TapReadFails            IncMetric  `json:"tap_read_fails"`              // failed tap reads
	TapWriteFails           IncMetric  `json:"tap_write_fails"`             // failed tap writes
	TapWriteAgg             LatencyAgg `json:"tap_write_agg"`               // tap write durations
	TxBytesCount            IncMetric  `json:"tx_bytes_count"`              // bytes sent
	TxMalformedFrames       IncMetric  `json:"tx_malformed_frames"`         // malformed TX frames
	TxFails                 IncMetric  `json:"tx_fails"`                    // send errors
	TxCount                 IncMetric  `json:"tx_count"`                    // successful send operations
	TxPacketsCount          IncMetric  `json:"tx_packets_count"`            // packets sent
	TxQueueEventCount       IncMetric  `json:"tx_queue_event_count"`        // TX queue notifications
	TxRateLimiterEventCount IncMetric  `json:"tx_rate_limiter_event_count"` // TX rate limiter events
	TxRateLimiterThrottled  IncMetric  `json:"tx_rate_limiter_throttled"`   // TX throttling events
	TxSpoofedMacCount       IncMetric  `json:"tx_spoofed_mac_count"`        // frames with a source MAC other than the guest's
	TxRemainingReqsCount    IncMetric  `json:"tx_remaining_reqs_count"`     // requests left in the TX queue
}

// PatchAPIRequestsMetrics is the "patch_api_requests" group.
type PatchAPIRequestsMetrics struct {
	DriveCount         IncMetric `json:"drive_count"`          // PATCH /drives
	DriveFails         IncMetric `json:"drive_fails"`          // failed PATCH /drives
	NetworkCount       IncMetric `json:"network_count"`        // PATCH /network-interfaces
	NetworkFails       IncMetric `json:"network_fails"`        // failed PATCH /network-interfaces
	MachineCfgCount    IncMetric `json:"machine_cfg_count"`    // PATCH /machine-config
	MachineCfgFails    IncMetric `json:"machine_cfg_fails"`    // failed PATCH /machine-config
	MMDSCount          IncMetric `json:"mmds_count"`           // PATCH /mmds
	MMDSFails          IncMetric `json:"mmds_fails"`           // failed PATCH /mmds
	HotplugMemoryCount IncMetric `json:"hotplug_memory_count"` // PATCH /hotplug/memory
	HotplugMemoryFails IncMetric `json:"hotplug_memory_fails"` // failed PATCH /hotplug/memory
	PmemCount          IncMetric `json:"pmem_count"`           // PATCH /pmem
	PmemFails          IncMetric `json:"pmem_fails"`           // failed PATCH /pmem
}

// PutAPIRequestsMetrics is the "put_api_requests" group.
type PutAPIRequestsMetrics struct {
	ActionsCount       IncMetric `json:"actions_count"`        // PUT /actions
	ActionsFails       IncMetric `json:"actions_fails"`        // failed PUT /actions
	BootSourceCount    IncMetric `json:"boot_source_count"`    // PUT /boot-source
	BootSourceFails    IncMetric `json:"boot_source_fails"`    // failed PUT /boot-source
	DriveCount         IncMetric `json:"drive_count"`          // PUT /drives
	DriveFails         IncMetric `json:"drive_fails"`          // failed PUT /drives
	LoggerCount        IncMetric `json:"logger_count"`         // PUT /logger
	LoggerFails        IncMetric `json:"logger_fails"`         // failed PUT /logger
	MachineCfgCount    IncMetric `json:"machine_cfg_count"`    // PUT /machine-config
	MachineCfgFails    IncMetric `json:"machine_cfg_fails"`    // failed PUT /machine-config
	CPUCfgCount        IncMetric `json:"cpu_cfg_count"`        // PUT /cpu-config
	CPUCfgFails        IncMetric `json:"cpu_cfg_fails"`        // failed PUT /cpu-config
	MetricsCount       IncMetric `json:"metrics_count"`        // PUT /metrics
	MetricsFails       IncMetric `json:"metrics_fails"`        // failed PUT /metrics
	NetworkCount       IncMetric `json:"network_count"`        // PUT /network-interfaces
	NetworkFails       IncMetric `json:"network_fails"`        // failed PUT /network-interfaces
	MMDSCount          IncMetric `json:"mmds_count"`           // PUT /mmds
	MMDSFails          IncMetric `json:"mmds_fails"`           // failed PUT /mmds
	VsockCount         IncMetric `json:"vsock_count"`          // PUT /vsock
	VsockFails         IncMetric `json:"vsock_fails"`          // failed PUT /vsock
	PmemCount          IncMetric `json:"pmem_count"`           // PUT /pmem
	PmemFails          IncMetric `json:"pmem_fails"`           // failed PUT /pmem
	SerialCount        IncMetric `json:"serial_count"`         // PUT /serial
	SerialFails        IncMetric `json:"serial_fails"`         // failed PUT /serial
	HotplugMemoryCount IncMetric `json:"hotplug_memory_count"` // PUT /hotplug/memory
	HotplugMemoryFails IncMetric `json:"hotplug_memory_fails"` // failed PUT /hotplug/memory
}

// SeccompMetrics is the "seccomp" group.
type SeccompMetrics struct {
	NumFaults StoreMetric `json:"num_faults"` // seccomp violations (set by the SIGSYS handler)
}

// VcpuMetrics is the "vcpu" group, shared by all vCPUs.
type VcpuMetrics struct {
	ExitIOIn          IncMetric  `json:"exit_io_in"`          // port I/O read exits
	ExitIOOut         IncMetric  `json:"exit_io_out"`         // port I/O write exits
	ExitMMIORead      IncMetric  `json:"exit_mmio_read"`      // MMIO read exits
	ExitMMIOWrite     IncMetric  `json:"exit_mmio_write"`     // MMIO write exits
	Failures          IncMetric  `json:"failures"`            // errors while running
	KvmclockCtrlFails IncMetric  `json:"kvmclock_ctrl_fails"` // failed KVM_KVMCLOCK_CTRL
	ExitIOInAgg       LatencyAgg `json:"exit_io_in_agg"`      // port I/O read handling time
	ExitIOOutAgg      LatencyAgg `json:"exit_io_out_agg"`     // port I/O write handling time
	ExitMMIOReadAgg   LatencyAgg `json:"exit_mmio_read_agg"`  // MMIO read handling time
	ExitMMIOWriteAgg  LatencyAgg `json:"exit_mmio_write_agg"` // MMIO write handling time
}

// VmmMetrics is the "vmm" group.
type VmmMetrics struct {
	PanicCount StoreMetric `json:"panic_count"` // 1 once the process has panicked
}

// SignalMetrics is the "signals" group. Deadly signals are StoreMetrics
// set to 1 by the handler just before the final write (a counter could be
// reset by a concurrent write and lost); SIGPIPE is survivable and counted.
type SignalMetrics struct {
	Sigbus  StoreMetric `json:"sigbus"`  // SIGBUS handled
	Sigsegv StoreMetric `json:"sigsegv"` // SIGSEGV handled
	Sigxfsz StoreMetric `json:"sigxfsz"` // SIGXFSZ handled
	Sigxcpu StoreMetric `json:"sigxcpu"` // SIGXCPU handled
	Sigpipe IncMetric   `json:"sigpipe"` // SIGPIPEs received
	Sighup  StoreMetric `json:"sighup"`  // SIGHUP handled
	Sigill  StoreMetric `json:"sigill"`  // SIGILL handled
}

// VsockMetrics is the "vsock" group.
type VsockMetrics struct {
	ActivateFails     IncMetric `json:"activate_fails"`       // failed activations
	CfgFails          IncMetric `json:"cfg_fails"`            // failed config-space accesses
	RxQueueEventFails IncMetric `json:"rx_queue_event_fails"` // failed RX queue event handling
	TxQueueEventFails IncMetric `json:"tx_queue_event_fails"` // failed TX queue event handling
	EvQueueEventFails IncMetric `json:"ev_queue_event_fails"` // failed event queue handling
	MuxerEventFails   IncMetric `json:"muxer_event_fails"`    // failed muxer event handling
	ConnEventFails    IncMetric `json:"conn_event_fails"`     // failed connection event handling
	RxQueueEventCount IncMetric `json:"rx_queue_event_count"` // RX queue notifications
	TxQueueEventCount IncMetric `json:"tx_queue_event_count"` // TX queue notifications
	RxBytesCount      IncMetric `json:"rx_bytes_count"`       // bytes received
	TxBytesCount      IncMetric `json:"tx_bytes_count"`       // bytes sent
	RxPacketsCount    IncMetric `json:"rx_packets_count"`     // packets received
	TxPacketsCount    IncMetric `json:"tx_packets_count"`     // packets sent
	ConnsAdded        IncMetric `json:"conns_added"`          // connections added
	ConnsKilled       IncMetric `json:"conns_killed"`         // connections killed
	ConnsRemoved      IncMetric `json:"conns_removed"`        // connections removed
	KillqResync       IncMetric `json:"killq_resync"`         // kill queue resyncs
	TxFlushFails      IncMetric `json:"tx_flush_fails"`       // failed flushes
	TxWriteFails      IncMetric `json:"tx_write_fails"`       // failed writes
	RxReadFails       IncMetric `json:"rx_read_fails"`        // failed reads
}

// EntropyMetrics is the "entropy" group.
type EntropyMetrics struct {
	ActivateFails               IncMetric `json:"activate_fails"`                 // failed activations
	EntropyEventFails           IncMetric `json:"entropy_event_fails"`            // failed queue event handling
	EntropyEventCount           IncMetric `json:"entropy_event_count"`            // requests served
	EntropyBytes                IncMetric `json:"entropy_bytes"`                  // bytes given to the guest
	HostRngFails                IncMetric `json:"host_rng_fails"`                 // host RNG errors
	EntropyRateLimiterThrottled IncMetric `json:"entropy_rate_limiter_throttled"` // requests throttled
	RateLimiterEventCount       IncMetric `json:"rate_limiter_event_count"`       // rate limiter events
}

// PmemMetrics is one "pmem_<id>" group; the "pmem" group sums all devices.
type PmemMetrics struct {
	ActivateFails              IncMetric `json:"activate_fails"`                // failed activations
	CfgFails                   IncMetric `json:"cfg_fails"`                     // failed config-space accesses
	EventFails                 IncMetric `json:"event_fails"`                   // failed event handling
	QueueEventCount            IncMetric `json:"queue_event_count"`             // queue notifications
	RateLimiterThrottledEvents IncMetric `json:"rate_limiter_throttled_events"` // requests throttled
	RateLimiterEventCount      IncMetric `json:"rate_limiter_event_count"`      // rate limiter events
}

// InterruptMetrics is the "interrupts" group.
type InterruptMetrics struct {
	Triggers      IncMetric `json:"triggers"`       // interrupts injected
	ConfigUpdates IncMetric `json:"config_updates"` // interrupt routing updates
}

// MemoryHotplugMetrics is the "memory_hotplug" group (virtio-mem).
type MemoryHotplugMetrics struct {
	ActivateFails      IncMetric  `json:"activate_fails"`       // failed activations
	QueueEventFails    IncMetric  `json:"queue_event_fails"`    // failed queue event handling
	QueueEventCount    IncMetric  `json:"queue_event_count"`    // queue notifications
	PlugAgg            LatencyAgg `json:"plug_agg"`             // plug durations
	PlugCount          IncMetric  `json:"plug_count"`           // plug requests
	PlugBytes          IncMetric  `json:"plug_bytes"`           // bytes plugged
	PlugFails          IncMetric  `json:"plug_fails"`           // failed plugs
	UnplugAgg          LatencyAgg `json:"unplug_agg"`           // unplug durations
	UnplugCount        IncMetric  `json:"unplug_count"`         // unplug requests
	UnplugBytes        IncMetric  `json:"unplug_bytes"`         // bytes unplugged
	UnplugFails        IncMetric  `json:"unplug_fails"`         // failed unplugs
	UnplugDiscardFails IncMetric  `json:"unplug_discard_fails"` // failed discards on unplug
	UnplugAllAgg       LatencyAgg `json:"unplug_all_agg"`       // unplug-all durations
	UnplugAllCount     IncMetric  `json:"unplug_all_count"`     // unplug-all requests
	UnplugAllFails     IncMetric  `json:"unplug_all_fails"`     // failed unplug-alls
	StateAgg           LatencyAgg `json:"state_agg"`            // state request durations
	StateCount         IncMetric  `json:"state_count"`          // state requests
	StateFails         IncMetric  `json:"state_fails"`          // failed state requests
}

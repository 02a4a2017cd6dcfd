package app

import "github.com/squib-vmm/squib/internal/cli"

// DefaultAPISock is Firecracker's default API socket path.
const DefaultAPISock = "/run/firecracker.socket"

// parser describes squib's command line, flag for flag Firecracker's.
func parser() *cli.Parser {
	return cli.NewParser(
		cli.Arg{Name: "api-sock", TakesValue: true, Default: DefaultAPISock, HasDefault: true,
			Help: "Unix socket the REST API listens on."},
		cli.Arg{Name: "id", TakesValue: true, Default: "anonymous-instance", HasDefault: true,
			Help: "Instance ID: 1 to 64 letters, digits or hyphens."},
		cli.Arg{Name: "seccomp-filter", TakesValue: true, Forbids: []string{"no-seccomp"},
			Help: "Seccomp filter file (Firecracker seccompiler JSON) to install instead of the default."},
		cli.Arg{Name: "no-seccomp", Forbids: []string{"seccomp-filter"},
			Help: "Run without any seccomp filter (not for production)."},
		cli.Arg{Name: "start-time-us", TakesValue: true, Help: "Monotonic time the process was started at, in microseconds (set by the jailer)."},
		cli.Arg{Name: "start-time-cpu-us", TakesValue: true, Help: "CPU time the process had used at start, in microseconds (set by the jailer)."},
		cli.Arg{Name: "parent-cpu-time-us", TakesValue: true, Help: "CPU time of the parent (jailer) process, in microseconds."},
		cli.Arg{Name: "config-file", TakesValue: true, Help: "JSON file describing the microVM; squib configures and boots it at start."},
		cli.Arg{Name: "no-api", Requires: "config-file",
			Help: "Serve no API; needs --config-file."},
		cli.Arg{Name: "log-path", TakesValue: true, Help: "File or FIFO to write the log to (default: standard output)."},
		cli.Arg{Name: "level", TakesValue: true, Help: "Log level: Error, Warning, Info, Debug, Trace or Off."},
		cli.Arg{Name: "module", TakesValue: true, Help: "Only log messages from modules starting with this prefix."},
		cli.Arg{Name: "show-level", Help: "Print the level in each log line."},
		cli.Arg{Name: "show-log-origin", Help: "Print the source file and line of each log line."},
		cli.Arg{Name: "metrics-path", TakesValue: true, Help: "File or FIFO to write metrics to."},
		cli.Arg{Name: "boot-timer", Help: "Add the boot-timer device, which logs the guest's boot time."},
		cli.Arg{Name: "version", Help: "Print the version and exit."},
		cli.Arg{Name: "snapshot-version", Help: "Print the snapshot format version squib writes and exit."},
		cli.Arg{Name: "describe-snapshot", TakesValue: true, Help: "Print the format version of a snapshot state file and exit."},
		cli.Arg{Name: "http-api-max-payload-size", TakesValue: true, Default: "51200", HasDefault: true,
			Help: "Largest API request body accepted, in bytes."},
		cli.Arg{Name: "mmds-size-limit", TakesValue: true, Help: "Largest MMDS data store, in bytes (default: the API body limit)."},
		cli.Arg{Name: "metadata", TakesValue: true, Help: "JSON file loaded into the MMDS data store at start."},
		cli.Arg{Name: "enable-pci", Help: "Use the PCI transport for virtio devices."},
	)
}

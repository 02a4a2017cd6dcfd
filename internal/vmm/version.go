package vmm

// Version strings reported to clients. squib speaks Firecracker's API at the
// version below so that orchestrators which check the VMM's version (Kata,
// for one, parses `--version`) accept it.
const (
	// FirecrackerVersion is the Firecracker API and CLI version squib implements.
	FirecrackerVersion = "1.17.0-dev"
	// AppName is what GET / reports as app_name.
	AppName = "Firecracker"
	// SquibVersion is squib's own release version.
	SquibVersion = "0.1.0"
	// DefaultInstanceID is the instance ID used when --id is not given.
	DefaultInstanceID = "anonymous-instance"
)

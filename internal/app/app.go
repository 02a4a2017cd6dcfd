package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/squib-vmm/squib/internal/api"
	"github.com/squib-vmm/squib/internal/cli"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/machine"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/seccomp"
	"github.com/squib-vmm/squib/internal/snapshot"
	"github.com/squib-vmm/squib/internal/vmm"
)

// Env is what Main needs from the outside world; tests substitute their
// own writers, builder and signal source.
type Env struct {
	Stdout, Stderr io.Writer
	// Builder boots VMs; nil means the KVM builder.
	Builder vmm.Builder
	// Signals, if set, replaces the process's signal subscription.
	Signals <-chan os.Signal
	// Ready, if set, is called with the API socket path once it serves.
	Ready func(sock string)
	// InstallSeccomp installs the process's seccomp filter (the program
	// --seccomp-filter or the default compiles to); the command sets it to
	// seccomp.Install. Nil skips installation: in-process tests must not
	// filter the test binary itself.
	InstallSeccomp func(prog []unix.SockFilter) error
}

// exitError carries an exit code and the message printed as "Error: ...".
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Main runs squib with args (without the program name) and returns the
// process exit code.
func Main(args []string, env Env) int {
	log := logger.For("main", "main")
	code, err := run(args, env, log)
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) {
			ee = &exitError{code: ExitGenericError, msg: err.Error()}
		}
		// Like Firecracker's main, log the error itself, then print it.
		log.Errorf("%s", ee.msg)
		fmt.Fprintf(env.Stderr, "Error: %s\n", ee.msg)
		log.Errorf("Firecracker exiting with error. exit_code=%d", ee.code)
		return ee.code
	}
	if code == ExitOK {
		log.Infof("Firecracker exiting successfully. exit_code=0")
	} else {
		log.Errorf("Firecracker exiting with error. exit_code=%d", code)
	}
	return code
}

func run(argv []string, env Env, log logger.Handle) (int, error) {
	p := parser()
	args, err := p.Parse(argv)
	if err != nil {
		return 0, &exitError{ExitArgParsing, fmt.Sprintf("Arguments parsing error: %s \n\nFor more information try --help.", err)}
	}
	switch {
	case args.HelpRequested():
		fmt.Fprintf(env.Stdout, "Firecracker v%s\n\n%s\n", vmm.FirecrackerVersion, p.FormattedHelp())
		return ExitOK, nil
	case args.VersionRequested():
		fmt.Fprintf(env.Stdout, "Firecracker v%s\n\n", vmm.FirecrackerVersion)
		return ExitOK, nil
	case args.Flag("snapshot-version"):
		fmt.Fprintln(env.Stdout, snapshot.Current)
		return ExitOK, nil
	}
	if path, ok := args.Value("describe-snapshot"); ok {
		return describeSnapshot(path, env.Stdout)
	}

	id, _ := args.Value("id")
	if err := validateInstanceID(id); err != nil {
		return 0, &exitError{ExitArgParsing, "Invalid instance ID: " + err.Error()}
	}
	logger.Default.SetInstanceID(id)
	if err := configureLogger(args); err != nil {
		return 0, err
	}
	log.Infof("Running Firecracker v%s (squib %s)", vmm.FirecrackerVersion, vmm.SquibVersion)

	sigs := env.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, handledSignals...)
		defer signal.Stop(ch)
		sigs = ch
	}

	if path, ok := args.Value("metrics-path"); ok {
		if err := metrics.Default.Init(path); err != nil {
			return 0, &exitError{ExitGenericError, "Could not initialize metrics: Cannot initialize the metrics system due to bad user input: " + err.Error()}
		}
	}

	seccompProg, err := seccompProgram(args)
	if err != nil {
		return 0, err
	}

	payload, err := parseSize(args, "http-api-max-payload-size", api.DefaultMaxPayload)
	if err != nil {
		return 0, err
	}
	mmdsLimit, err := parseSize(args, "mmds-size-limit", payload)
	if err != nil {
		return 0, err
	}
	startUS, err := parseU64(args, "start-time-us")
	if err != nil {
		return 0, err
	}
	startCPUUS, err := parseU64(args, "start-time-cpu-us")
	if err != nil {
		return 0, err
	}
	parentCPUUS, err := parseU64(args, "parent-cpu-time-us")
	if err != nil {
		return 0, err
	}

	var configData []byte
	if path, ok := args.Value("config-file"); ok {
		configData, err = os.ReadFile(path)
		if err != nil {
			return 0, &exitError{ExitGenericError, "Unable to open or read from the configuration file: " + logger.OSErrorText(err)}
		}
	}
	store := mmds.NewStore(int(mmdsLimit))
	if path, ok := args.Value("metadata"); ok {
		if err := loadMetadata(store, path); err != nil {
			return 0, err
		}
		log.Infof("Successfully added metadata to mmds from file")
	}

	builder := env.Builder
	if builder == nil {
		builder = &machine.Builder{Stdin: os.Stdin, Stdout: env.Stdout}
	}
	// Set on the controller goroutine at boot, stopped by this one at exit.
	var periodic atomic.Pointer[metrics.Periodic]
	defer func() {
		if p := periodic.Load(); p != nil {
			p.Stop()
		}
	}()
	ctrl := vmm.NewController(vmm.Options{
		InstanceID: id,
		EnablePCI:  args.Flag("enable-pci"),
		BootTimer:  args.Flag("boot-timer"),
		Builder:    builder,
		Hooks: vmm.Hooks{
			ConfigureLogger:  applyLoggerConfig,
			ConfigureMetrics: applyMetricsConfig,
			FlushMetrics:     metrics.Default.Write,
			Mmds:             store,
			VMStarted:        func() { periodic.Store(metrics.Default.StartPeriodic(metrics.WritePeriod)) },
			VMPaused: func(paused bool) {
				p := periodic.Load()
				switch {
				case p == nil:
				case paused:
					p.Pause()
				default:
					p.Resume()
				}
			},
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ctrl.Run(ctx)

	// The filter goes on once everything squib reads at start-up is read,
	// before any request is served or any guest configured (Firecracker
	// installs its VMM filter at the same point of its start-up).
	if seccompProg != nil && env.InstallSeccomp != nil {
		if err := env.InstallSeccomp(seccompProg); err != nil {
			return 0, &exitError{ExitGenericError, "Seccomp error: Failed to install the seccomp filter: " + err.Error()}
		}
	}

	var srv *api.Server
	if !args.Flag("no-api") {
		sock, _ := args.Value("api-sock")
		l, err := listen(sock)
		if err != nil {
			return 0, err
		}
		log.Infof("Listening on API socket (%q).", sock)
		srv = api.New(ctrl, api.Options{MaxPayload: int64(payload), Mmds: store})
		go srv.Serve(l)
		defer srv.Shutdown(context.Background())
		_, haveStart := args.Value("start-time-us")
		_, haveCPU := args.Value("start-time-cpu-us")
		recordStartup(haveStart, haveCPU, startUS, startCPUUS, parentCPUUS)
		log.Infof("API server started.")
		if env.Ready != nil {
			env.Ready(sock)
		}
	}

	if configData != nil {
		if err := bootFromConfig(ctx, ctrl, configData, srv != nil, log); err != nil {
			return 0, err
		}
	}

	for {
		select {
		case code := <-ctrl.Exited():
			log.Infof("Vmm is stopping.")
			metrics.Default.Write()
			return code, nil
		case sig := <-sigs:
			if code, exit := onSignal(sig, log); exit {
				return code, nil
			}
		}
	}
}

// validateInstanceID applies Firecracker's rule: 1 to 64 characters, each
// alphanumeric or a hyphen.
func validateInstanceID(id string) error {
	if len(id) < 1 || len(id) > 64 {
		return fmt.Errorf("Invalid len (%d);  the length must be between 1 and 64", len(id))
	}
	for _, c := range id {
		if !(c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("Invalid char (%c) at position %d", c, indexRune(id, c))
		}
	}
	return nil
}

func indexRune(s string, r rune) int {
	for i, c := range []rune(s) {
		if c == r {
			return i
		}
	}
	return -1
}

func configureLogger(args *cli.Args) error {
	var c logger.Config
	if v, ok := args.Value("level"); ok {
		lvl, err := logger.ParseLevel(v)
		if err != nil {
			var le *logger.LevelParseError
			msg := err.Error()
			if errors.As(err, &le) {
				msg = le.CLIMessage()
			}
			return &exitError{ExitBadConfiguration, msg}
		}
		c.Level = &lvl
	}
	if v, ok := args.Value("log-path"); ok {
		c.Path = &v
	}
	if v, ok := args.Value("module"); ok {
		c.Module = &v
	}
	t := true
	if args.Flag("show-level") {
		c.ShowLevel = &t
	}
	if args.Flag("show-log-origin") {
		c.ShowLogOrigin = &t
	}
	if err := logger.Default.Configure(c); err != nil {
		return &exitError{ExitGenericError, "Could not initialize logger: " + err.Error()}
	}
	return nil
}

// applyLoggerConfig is PUT /logger.
func applyLoggerConfig(c vmm.LoggerConfig) error {
	lc := logger.Config{Path: c.LogPath, ShowLevel: c.ShowLevel, ShowLogOrigin: c.ShowLogOrigin, Module: c.Module}
	if c.Level != nil {
		lvl, err := logger.ParseLevel(string(*c.Level))
		if err != nil {
			return &vmm.Error{Msg: vmm.PrefixLogger + err.Error()}
		}
		lc.Level = &lvl
	}
	if err := logger.Default.Configure(lc); err != nil {
		return &vmm.Error{Msg: vmm.PrefixLogger + err.Error()}
	}
	return nil
}

// applyMetricsConfig is PUT /metrics.
func applyMetricsConfig(c vmm.MetricsConfig) error {
	mc := metrics.Config{Path: *c.MetricsPath, EmitID: c.EmitID != nil && *c.EmitID, Properties: c.Properties}
	if err := metrics.Default.Configure(mc); err != nil {
		return &vmm.Error{Msg: vmm.PrefixMetrics + "Cannot initialize the metrics system due to bad user input: " + err.Error()}
	}
	return nil
}

// seccompProgram compiles the process's seccomp filter: the one in
// --seccomp-filter (Firecracker's seccompiler JSON), else squib's default;
// nil with --no-seccomp.
func seccompProgram(args *cli.Args) ([]unix.SockFilter, error) {
	if args.Flag("no-seccomp") {
		return nil, nil
	}
	f := seccomp.Default()
	if path, ok := args.Value("seccomp-filter"); ok {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, &exitError{ExitGenericError, "Seccomp error: Failed to open seccomp filter file " + path + ": " + logger.OSErrorText(err)}
		}
		if f, err = seccomp.Parse(data); err != nil {
			return nil, &exitError{ExitGenericError, "Seccomp error: " + path + ": " + err.Error()}
		}
	}
	prog, err := f.Compile()
	if err != nil {
		return nil, &exitError{ExitGenericError, "Seccomp error: " + err.Error()}
	}
	return prog, nil
}

func parseSize(args *cli.Args, name string, def uint64) (uint64, error) {
	v, ok := args.Value(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, &exitError{ExitArgParsing, fmt.Sprintf("'%s' parameter expected to be of 'usize' type.", name)}
	}
	return n, nil
}

func parseU64(args *cli.Args, name string) (uint64, error) {
	v, ok := args.Value(name)
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, &exitError{ExitArgParsing, fmt.Sprintf("'%s' parameter expected to be of 'u64' type.", name)}
	}
	return n, nil
}

func loadMetadata(store *mmds.Store, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return &exitError{ExitGenericError, "Unable to open or read from the mmds content file: " + logger.OSErrorText(err)}
	}
	if !jsontext.Value(data).IsValid() {
		return &exitError{ExitGenericError, "MMDS error: metadata provided not valid json"}
	}
	if err := store.Put(data); err != nil {
		_, msg := mmds.FaultMessage(err)
		return &exitError{ExitGenericError, "Populating MMDS from file failed: " + trimPrefix(msg)}
	}
	return nil
}

func trimPrefix(msg string) string {
	for _, p := range []string{mmds.LimitErrorPrefix, mmds.DataErrorPrefix} {
		if len(msg) > len(p) && msg[:len(p)] == p {
			return msg[len(p):]
		}
	}
	return msg
}

// listen binds the API socket. Like Firecracker, squib refuses a path that
// exists (it may belong to another instance) and never unlinks it.
func listen(path string) (net.Listener, error) {
	fail := &exitError{ExitGenericError, fmt.Sprintf("Failed to open the API socket at: %s. Check that it is not already used.", path)}
	if _, err := os.Lstat(path); err == nil {
		return nil, fail
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		fail.msg += " " + logger.OSErrorText(err)
		return nil, fail
	}
	l.SetUnlinkOnClose(false)
	return l, nil
}

func recordStartup(haveStart, haveCPU bool, startUS, startCPUUS, parentCPUUS uint64) {
	if haveStart {
		now := uint64(monotonicNowUS())
		if now > startUS {
			metrics.Default.APIServer.ProcessStartupTimeUS.Store(now - startUS)
		}
	}
	// Keyed on the flag's presence, not its value: a jailer that starts
	// squib in a new PID namespace passes 0 (the new process's CPU clock
	// starts there), as Firecracker's does.
	if haveCPU {
		cpu := uint64(processCPUTimeUS())
		if cpu+parentCPUUS > startCPUUS {
			metrics.Default.APIServer.ProcessStartupTimeCPUUS.Store(cpu + parentCPUUS - startCPUUS)
		}
	}
}

func monotonicNowUS() int64 {
	var ts syscall.Timespec
	clockGettime(1 /* CLOCK_MONOTONIC */, &ts)
	return ts.Sec*1e6 + ts.Nsec/1e3
}

func processCPUTimeUS() int64 {
	var ts syscall.Timespec
	clockGettime(2 /* CLOCK_PROCESS_CPUTIME_ID */, &ts)
	return ts.Sec*1e6 + ts.Nsec/1e3
}

// bootFromConfig applies a config file through the controller, then boots.
func bootFromConfig(ctx context.Context, ctrl *vmm.Controller, data []byte, withAPI bool, log logger.Handle) error {
	prefix := ""
	if withAPI {
		prefix = "Failed to build MicroVM from Json: "
	}
	reqs, err := vmm.ParseConfigFile(data)
	if err == nil {
		for _, r := range reqs {
			if _, err = ctrl.Do(ctx, r); err != nil {
				break
			}
		}
	}
	if err != nil {
		msg := prefix + "Configuration for VMM from one single json failed: " + err.Error()
		return &exitError{ExitGenericError, msg}
	}
	if _, err := ctrl.Do(ctx, vmm.Request{Op: vmm.OpInstanceStart}); err != nil {
		msg := prefix + "Could not Start MicroVM from one single json: " + err.Error()
		return &exitError{ExitGenericError, msg}
	}
	log.Infof("Successfully started microvm that was configured from one single json")
	return nil
}

// describeSnapshot prints a snapshot state file's format version.
func describeSnapshot(path string, out io.Writer) (int, error) {
	v, err := snapshot.Describe(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return 0, &exitError{ExitGenericError, "When printing Snapshot Data format: Failed to open snapshot file: " + logger.OSErrorText(pe.Err)}
		}
		return 0, &exitError{ExitGenericError, "When printing Snapshot Data format: " + err.Error()}
	}
	fmt.Fprintln(out, v)
	return ExitOK, nil
}

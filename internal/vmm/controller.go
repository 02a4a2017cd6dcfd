package vmm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/mmds"
)

// Request is one typed, validated operation for the controller.
type Request struct {
	Op Op
	// ID is the resource ID from the path (drives, pmem, interfaces).
	ID string
	// Body is the decoded model: *MachineConfigUpdate, *BootSource, ...,
	// or raw JSON ([]byte) for the MMDS data store.
	Body any
}

// Result is what a successful request returns.
type Result struct {
	// JSON is the answer body of a read served by the controller; nil for
	// 204 answers.
	JSON []byte
}

// Hooks connect the controller to process-wide services owned by the
// caller (logger, metrics, MMDS store), which keeps this package free of
// global state.
type Hooks struct {
	ConfigureLogger  func(LoggerConfig) error
	ConfigureMetrics func(MetricsConfig) error
	FlushMetrics     func() error
	// Mmds is the MMDS data store; the API's GET /mmds reads it directly.
	Mmds *mmds.Store
	// VMStarted is called once the VM has booted or been restored;
	// squib starts its periodic metrics then, as Firecracker does.
	VMStarted func()
	// VMPaused is called with true on pause and false on resume.
	VMPaused func(paused bool)
}

// Options configure a Controller.
type Options struct {
	InstanceID string
	EnablePCI  bool
	BootTimer  bool
	Builder    Builder
	Hooks      Hooks
	// Timeouts override DefaultTimeouts per class.
	Timeouts map[Class]time.Duration
}

// Controller is the single executor of every mutation. Run must be running
// for Do to make progress.
type Controller struct {
	opts  Options
	calls chan *call
	view  atomic.Pointer[View]
	// busy names the operation being executed, for timeout messages.
	busy atomic.Pointer[string]
	exit chan int

	// Fields below are owned by the Run goroutine.
	res    *Resources
	vm     VM
	paused bool
}

type call struct {
	req Request
	// state moves queued -> running, or queued -> abandoned when the caller
	// gave up first; the CAS makes a timed-out queued call never execute.
	state atomic.Int32
	done  chan callResult
}

type callResult struct {
	res Result
	err error
}

const (
	callQueued int32 = iota
	callRunning
	callAbandoned
)

// NewController returns a controller for a fresh VM.
func NewController(opts Options) *Controller {
	if opts.InstanceID == "" {
		opts.InstanceID = DefaultInstanceID
	}
	if opts.Hooks.VMStarted == nil {
		opts.Hooks.VMStarted = func() {}
	}
	if opts.Hooks.VMPaused == nil {
		opts.Hooks.VMPaused = func(bool) {}
	}
	c := &Controller{opts: opts, calls: make(chan *call, 16), exit: make(chan int, 1), res: NewResources()}
	c.publish()
	return c
}

// View returns the latest published view. It never blocks.
func (c *Controller) View() *View { return c.view.Load() }

// InstanceInfo returns GET /'s answer for view v: v.Info, or, while a
// request is executing, the same with in_progress naming it. It never
// waits on the controller.
func (c *Controller) InstanceInfo(v *View) []byte {
	b := c.busy.Load()
	if b == nil {
		return v.Info
	}
	return mustMarshal(InstanceInfo{ID: c.opts.InstanceID, State: v.State, VMMVersion: FirecrackerVersion, AppName: AppName, InProgress: *b})
}

// Terminate asks the process to exit with code, as Exited reports; the
// API calls it after answering a fatal error.
func (c *Controller) Terminate(code int) {
	select {
	case c.exit <- code:
	default: // an exit is already pending
	}
}

// Exited delivers the process exit code once the VM has stopped.
func (c *Controller) Exited() <-chan int { return c.exit }

// Timeout returns the limit for a class.
func (c *Controller) Timeout(cl Class) time.Duration {
	if d, ok := c.opts.Timeouts[cl]; ok {
		return d
	}
	return DefaultTimeouts[cl]
}

// Run executes requests until ctx ends. Only this goroutine touches the
// resources and the VM.
func (c *Controller) Run(ctx context.Context) {
	for {
		var vmDone <-chan struct{}
		if c.vm != nil {
			vmDone = c.vm.Done()
		}
		select {
		case <-ctx.Done():
			return
		case <-vmDone:
			code := c.vm.ExitCode()
			c.vm.Stop()
			c.vm = nil
			c.publish()
			c.exit <- code
			return
		case cl := <-c.calls:
			if !cl.state.CompareAndSwap(callQueued, callRunning) {
				continue // the caller timed out while it waited in line
			}
			name := cl.req.Op.String()
			c.busy.Store(&name)
			begin := time.Now()
			res, err := c.execute(ctx, cl.req)
			if err == nil {
				recordLatency(cl.req, time.Since(begin), true)
			}
			c.busy.Store(nil)
			c.publish()
			cl.done <- callResult{res, err}
		}
	}
}

// Do hands req to the controller and waits for its answer, at most the
// request's class timeout. A request that times out while still queued is
// withdrawn and never runs; one that times out while running completes in
// the background and its effect shows in the published view.
func (c *Controller) Do(ctx context.Context, req Request) (Result, error) {
	timeout := c.Timeout(req.Op.Class())
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl := &call{req: req, done: make(chan callResult, 1)}
	select {
	case c.calls <- cl:
	case <-ctx.Done():
		return Result{}, c.timeoutError(req, timeout, false)
	}
	begin := time.Now()
	select {
	case r := <-cl.done:
		if r.err == nil {
			recordLatency(req, time.Since(begin), false)
		}
		return r.res, r.err
	case <-ctx.Done():
		if cl.state.CompareAndSwap(callQueued, callAbandoned) {
			return Result{}, c.timeoutError(req, timeout, false)
		}
		return Result{}, c.timeoutError(req, timeout, true)
	}
}

func (c *Controller) timeoutError(req Request, d time.Duration, running bool) error {
	if running {
		return &Error{Msg: fmt.Sprintf("The request timed out after %s: the VMM is still executing %s; it will complete, and GET / and GET /vm/config show its outcome.", d, req.Op)}
	}
	busy := "another request"
	if b := c.busy.Load(); b != nil {
		busy = *b
	}
	return &Error{Msg: fmt.Sprintf("The request timed out after %s waiting for the VMM, which is busy with %s; the request was not applied.", d, busy)}
}

// publish renders and stores a new view.
func (c *Controller) publish() {
	v := &View{Started: c.vm != nil || c.view.Load() != nil && c.view.Load().Started, VM: c.vm}
	switch {
	case !v.Started:
		v.State = StateNotStarted
	case c.paused:
		v.State = StatePaused
	default:
		v.State = StateRunning
	}
	v.Info = mustMarshal(InstanceInfo{ID: c.opts.InstanceID, State: v.State, VMMVersion: FirecrackerVersion, AppName: AppName})
	if c.res.MachineApplied || v.Started {
		v.MachineConfig = mustMarshal(c.res.Machine.Model())
	} else {
		// The seed's rule: no machine configuration applied yet reads as an
		// empty object.
		v.MachineConfig = []byte("{}")
	}
	v.VMConfig = mustMarshal(c.res.Snapshot())
	if b := c.res.Balloon; b != nil {
		v.Balloon = mustMarshal(b)
		v.BalloonStatsEnabled = *b.StatsPollingIntervalS != 0
	}
	v.Hotplug = c.res.Hotplug != nil
	v.MmdsAttached = c.res.Mmds != nil && len(c.res.Mmds.NetworkInterfaces) > 0
	c.view.Store(v)
}

func (c *Controller) started() bool { return c.View().Started }

// execute runs one request on the controller goroutine.
func (c *Controller) execute(ctx context.Context, req Request) (Result, error) {
	if err := req.Op.CheckPhase(c.started()); err != nil {
		return Result{}, err
	}
	if ops[req.Op].bootSpecific && !c.started() {
		c.res.BootSpecific = true
	}
	if c.started() {
		return c.executeRuntime(ctx, req)
	}
	return c.executePreboot(ctx, req)
}

func (c *Controller) executePreboot(ctx context.Context, req Request) (Result, error) {
	r := c.res
	switch req.Op {
	case OpPutBootSource:
		return Result{}, r.SetBootSource(*req.Body.(*BootSource))
	case OpPutCPUConfig:
		r.CPUConfig = req.Body.(*CPUConfig)
		r.Machine.CPUTemplate = ""
		return Result{}, nil
	case OpPutMachineConfig, OpPatchMachineConfig:
		return Result{}, r.UpdateMachine(*req.Body.(*MachineConfigUpdate))
	case OpPutDrive:
		return Result{}, r.InsertDrive(*req.Body.(*Drive), r.rootPmem())
	case OpPutPmem:
		return Result{}, r.InsertPmem(*req.Body.(*Pmem))
	case OpPutNet:
		return Result{}, r.InsertNet(*req.Body.(*NetworkInterface))
	case OpPutVsock:
		return Result{}, r.SetVsock(*req.Body.(*Vsock))
	case OpPutEntropy:
		e := *req.Body.(*Entropy)
		e.RateLimiter = e.RateLimiter.normalized()
		r.Entropy = &e
		return Result{}, nil
	case OpPutSerial:
		r.Serial = req.Body.(*Serial)
		return Result{}, nil
	case OpPutLogger:
		return Result{}, c.opts.Hooks.ConfigureLogger(*req.Body.(*LoggerConfig))
	case OpPutMetrics:
		return Result{}, c.opts.Hooks.ConfigureMetrics(*req.Body.(*MetricsConfig))
	case OpPutMmds, OpPatchMmds:
		return Result{}, c.mmdsData(req)
	case OpPutMmdsConfig:
		if err := r.SetMmdsConfig(*req.Body.(*MmdsConfig)); err != nil {
			return Result{}, err
		}
		c.opts.Hooks.Mmds.ApplyConfig(r.Mmds.storeConfig())
		return Result{}, nil
	case OpPutBalloon:
		return Result{}, r.SetBalloon(*req.Body.(*Balloon))
	case OpPutHotplug:
		return Result{}, r.SetHotplug(*req.Body.(*MemoryHotplugConfig))
	case OpInstanceStart:
		return Result{}, c.start(ctx)
	case OpSnapshotLoad:
		return Result{}, c.loadSnapshot(ctx, req.Body.(*SnapshotLoadParams))
	}
	return Result{}, &Error{Msg: PrefixInternal + "unhandled request " + req.Op.String()}
}

func (c *Controller) buildOptions() BuildOptions {
	return BuildOptions{InstanceID: c.opts.InstanceID, EnablePCI: c.opts.EnablePCI, BootTimer: c.opts.BootTimer, Mmds: c.opts.Hooks.Mmds}
}

// start boots the VM from the resources. A failure is not fatal: the
// configuration stays and InstanceStart may be retried.
func (c *Controller) start(ctx context.Context) error {
	if err := c.res.CheckKernelImage(); err != nil {
		return err
	}
	vm, err := c.opts.Builder.Build(ctx, c.res, c.buildOptions())
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return &Error{Msg: PrefixStart + err.Error()}
	}
	c.vm = vm
	c.paused = false
	c.markStarted()
	return nil
}

// markStarted publishes Started; publish derives it from the previous view
// so it stays true after the VM ends.
func (c *Controller) markStarted() {
	v := *c.View()
	v.Started = true
	c.view.Store(&v)
	c.opts.Hooks.VMStarted()
	if c.paused {
		c.opts.Hooks.VMPaused(true)
	}
}

func (c *Controller) loadSnapshot(ctx context.Context, p *SnapshotLoadParams) error {
	if c.res.BootSpecific {
		return errorf(PrefixLoadSnap, "Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	opts := c.buildOptions()
	opts.Serial = c.res.Serial
	opts.ClockRealtime = p.ClockRealtime != nil && *p.ClockRealtime
	vm, res, err := c.opts.Builder.Restore(ctx, p, opts)
	if err != nil {
		// Past this point Firecracker has torn its state down: the answer
		// is sent, then the process exits.
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Msg: PrefixLoadSnap + err.Error()}
		}
		return &Error{Msg: e.Msg, Fatal: true}
	}
	c.res.Close()
	c.res = res
	if res.Mmds != nil {
		c.opts.Hooks.Mmds.ApplyConfig(res.Mmds.storeConfig())
	}
	c.vm = vm
	c.paused = p.ResumeVM == nil || !*p.ResumeVM
	c.markStarted()
	return nil
}

func (c *Controller) executeRuntime(ctx context.Context, req Request) (Result, error) {
	r, vm := c.res, c.vm
	if vm == nil {
		return Result{}, &Error{Msg: PrefixInternal + "the microVM has stopped"}
	}
	switch req.Op {
	case OpPutDrive, OpPutPmem, OpPutNet, OpDeleteDrive, OpDeletePmem, OpDeleteNet:
		if !c.opts.EnablePCI {
			return Result{}, &Error{Msg: "PCI is not enabled"}
		}
		return Result{}, &Error{Msg: PrefixUnsupported + "PCI hot-plug is not implemented by squib."}
	case OpPutMmds, OpPatchMmds:
		if r.Mmds == nil || len(r.Mmds.NetworkInterfaces) == 0 {
			return Result{}, &Error{Msg: PrefixMmds + "The MMDS data store is not initialized."}
		}
		return Result{}, c.mmdsData(req)
	case OpPatchDrive:
		u := req.Body.(*DriveUpdate)
		d := slices.IndexFunc(r.Drives, func(x *DriveResource) bool { return *x.Config.DriveID == req.ID })
		if d < 0 {
			return Result{}, errorf(PrefixDrive, "Unable to patch the block device: Failed perform action on device: Device not found Please verify the request arguments.")
		}
		if u.PathOnHost == nil && u.RateLimiter == nil {
			return Result{}, errorf(PrefixDrive, "Unable to patch the block device: Running method expected different backend. Please verify the request arguments.")
		}
		if err := vm.UpdateDrive(req.ID, u.PathOnHost, u.RateLimiter); err != nil {
			return Result{}, wrap(PrefixDrive+"Unable to patch the block device: ", err)
		}
		cfg := &r.Drives[d].Config
		if u.PathOnHost != nil {
			p := *u.PathOnHost
			cfg.PathOnHost = &p
		}
		cfg.RateLimiter = cfg.RateLimiter.merged(u.RateLimiter)
		return Result{}, nil
	case OpPatchNet:
		u := req.Body.(*NetworkInterfaceUpdate)
		n := slices.IndexFunc(r.Nets, func(x *NetResource) bool { return *x.Config.IfaceID == req.ID })
		if n < 0 {
			return Result{}, errorf(PrefixNetwork, "Unable to update the net device: Failed perform action on device: Device not found")
		}
		if err := vm.UpdateNet(req.ID, u.RxRateLimiter, u.TxRateLimiter); err != nil {
			return Result{}, wrap(PrefixNetwork+"Unable to update the net device: ", err)
		}
		cfg := &r.Nets[n].Config
		cfg.RxRateLimiter = cfg.RxRateLimiter.merged(u.RxRateLimiter)
		cfg.TxRateLimiter = cfg.TxRateLimiter.merged(u.TxRateLimiter)
		return Result{}, nil
	case OpPatchPmem:
		u := req.Body.(*PmemUpdate)
		p := slices.IndexFunc(r.Pmem, func(x *Pmem) bool { return *x.ID == req.ID })
		if p < 0 {
			return Result{}, errorf(PrefixPmem, "Unable to patch the pmem device: Failed perform action on device: Device not found Please verify the request arguments.")
		}
		if u.RateLimiter == nil {
			return Result{}, nil
		}
		if err := vm.UpdatePmem(req.ID, u.RateLimiter); err != nil {
			return Result{}, wrap(PrefixPmem+"Unable to patch the pmem device: ", err)
		}
		r.Pmem[p].RateLimiter = r.Pmem[p].RateLimiter.merged(u.RateLimiter)
		return Result{}, nil
	case OpPatchBalloon:
		if r.Balloon == nil {
			return Result{}, errorf(PrefixBalloonUpdate, "Failed perform action on device: Device not found")
		}
		amount := *req.Body.(*BalloonUpdate).AmountMib
		if uint64(amount) > r.Machine.MemSizeMib {
			return Result{}, errorf(PrefixBalloonUpdate, "Balloon: Requested memory should be less than %dMiB", amount)
		}
		if err := vm.UpdateBalloon(amount); err != nil {
			return Result{}, wrap(PrefixBalloonUpdate, err)
		}
		b := *r.Balloon
		b.AmountMib = &amount
		r.Balloon = &b
		return Result{}, nil
	case OpPatchBalloonStats:
		if r.Balloon == nil {
			return Result{}, errorf(PrefixBalloonUpdate, "Failed perform action on device: Device not found")
		}
		iv := *req.Body.(*BalloonStatsUpdate).StatsPollingIntervalS
		old := *r.Balloon.StatsPollingIntervalS
		if (old == 0) != (iv == 0) {
			return Result{}, errorf(PrefixBalloonUpdate, "Balloon: Statistics cannot be enabled/disabled after activation.")
		}
		if iv == old {
			return Result{}, nil
		}
		if err := vm.UpdateBalloonStatsInterval(iv); err != nil {
			return Result{}, wrap(PrefixBalloonUpdate, err)
		}
		b := *r.Balloon
		b.StatsPollingIntervalS = &iv
		r.Balloon = &b
		return Result{}, nil
	case OpHintingStart, OpHintingStatus, OpHintingStop:
		if r.Balloon == nil {
			return Result{}, errorf(PrefixBalloonUpdate, "Failed perform action on device: Device not found")
		}
		if !*r.Balloon.FreePageHinting {
			return Result{}, errorf(PrefixBalloonUpdate, "Balloon: Attempting to use hinting when not enabled")
		}
		switch req.Op {
		case OpHintingStart:
			cmd, _ := req.Body.(*BalloonStartCmd)
			if cmd == nil {
				cmd = &BalloonStartCmd{}
			}
			return Result{}, wrap(PrefixBalloonUpdate, vm.StartHinting(*cmd))
		case OpHintingStop:
			return Result{}, wrap(PrefixBalloonUpdate, vm.StopHinting())
		}
		st, err := vm.HintingStatus()
		if err != nil {
			return Result{}, wrap(PrefixBalloonUpdate, err)
		}
		return Result{JSON: mustMarshal(st)}, nil
	case OpPatchHotplug:
		if r.Hotplug == nil {
			return Result{}, errorf(PrefixHotplugUpdate, "Failed perform action on device: Device not found")
		}
		size := *req.Body.(*MemoryHotplugSizeUpdate).RequestedSizeMib
		if size%*r.Hotplug.BlockSizeMib != 0 || size > *r.Hotplug.TotalSizeMib {
			return Result{}, errorf(PrefixHotplugUpdate, "Invalid size: Size %d is invalid: it must be a multiple of block size and less than the total size", uint64(size)<<20)
		}
		return Result{}, wrap(PrefixHotplugUpdate, vm.UpdateHotplugMemory(size))
	case OpPatchVM:
		switch *req.Body.(*VMUpdate).State {
		case VMPaused:
			if c.paused {
				return Result{}, nil
			}
			if err := vm.Pause(); err != nil {
				return Result{}, wrap(PrefixInternal, err)
			}
			c.paused = true
			c.opts.Hooks.VMPaused(true)
		case VMResumed:
			if !c.paused {
				return Result{}, nil
			}
			if err := vm.Resume(); err != nil {
				return Result{}, wrap(PrefixInternal, err)
			}
			c.paused = false
			c.opts.Hooks.VMPaused(false)
		}
		return Result{}, nil
	case OpFlushMetrics:
		return Result{}, wrap(PrefixInternal+"Metrics error: ", c.opts.Hooks.FlushMetrics())
	case OpSendCtrlAltDel:
		return Result{}, wrap(PrefixInternal, vm.SendCtrlAltDel())
	case OpSnapshotCreate:
		if !c.paused {
			return Result{}, errorf(PrefixCreateSnap, "Cannot save the microVM state: Operation not allowed: save/restore unavailable while running")
		}
		return Result{}, wrap(PrefixCreateSnap, vm.CreateSnapshot(ctx, req.Body.(*SnapshotCreateParams), mustMarshal(c.res.Snapshot())))
	}
	return Result{}, &Error{Msg: PrefixInternal + "unhandled request " + req.Op.String()}
}

// mmdsData applies PUT or PATCH /mmds to the data store.
func (c *Controller) mmdsData(req Request) error {
	var err error
	if req.Op == OpPutMmds {
		err = c.opts.Hooks.Mmds.Put(req.Body.([]byte))
	} else {
		err = c.opts.Hooks.Mmds.Patch(req.Body.([]byte))
	}
	if err != nil {
		return mmdsError(err)
	}
	return nil
}

// wrap prefixes err's text unless it is already a complete *Error.
func wrap(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Msg: prefix + err.Error()}
}

// recordLatency stores a successful pause, resume, snapshot create or
// load's duration in Firecracker's latencies_us metrics: the VMM-level
// figure is the execution alone, the API-level one includes waiting for
// the controller.
func recordLatency(req Request, d time.Duration, vmmLevel bool) {
	l := &metrics.Default.LatenciesUS
	var api, vmm *metrics.StoreMetric
	switch req.Op {
	case OpPatchVM:
		if u, ok := req.Body.(*VMUpdate); ok && *u.State == VMPaused {
			api, vmm = &l.PauseVM, &l.VmmPauseVM
		} else {
			api, vmm = &l.ResumeVM, &l.VmmResumeVM
		}
	case OpSnapshotCreate:
		if p, ok := req.Body.(*SnapshotCreateParams); ok && p.SnapshotType != nil && *p.SnapshotType == "Diff" {
			api, vmm = &l.DiffCreateSnapshot, &l.VmmDiffCreateSnapshot
		} else {
			api, vmm = &l.FullCreateSnapshot, &l.VmmFullCreateSnapshot
		}
	case OpSnapshotLoad:
		api, vmm = &l.LoadSnapshot, &l.VmmLoadSnapshot
	default:
		return
	}
	us := uint64(d.Microseconds())
	if vmmLevel {
		vmm.Store(us)
	} else {
		api.Store(us)
	}
}

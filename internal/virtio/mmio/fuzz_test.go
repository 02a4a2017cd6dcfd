package mmio_test

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// An op is 8 bytes: kind, offset (u16), size code, value (u32).
const (
	opRead = iota
	opWrite
	opDevice // the device works its queues and raises interrupts
	opNotify // an ioeventfd fires
)

var sizeCodes = [...]int{4, 4, 4, 1, 2, 8, 0, 3}

func op(kind byte, off uint16, v uint32) []byte {
	b := []byte{kind, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint16(b[1:], off)
	binary.LittleEndian.PutUint32(b[4:], v)
	return b
}

// linuxInit is the driver's probe as ops, with the rings of two queues at
// 0x10000 and 0x20000 (16 entries each).
func linuxInit() []byte {
	var s []byte
	add := func(b []byte) { s = append(s, b...) }
	add(op(opRead, 0x00, 0))
	add(op(opRead, 0x04, 0))
	add(op(opRead, 0x08, 0))
	add(op(opWrite, 0x70, 0))
	add(op(opWrite, 0x70, 1))
	add(op(opWrite, 0x70, 3))
	add(op(opWrite, 0x14, 1))
	add(op(opRead, 0x10, 0))
	add(op(opWrite, 0x24, 1))
	add(op(opWrite, 0x20, 1))
	add(op(opWrite, 0x24, 0))
	add(op(opWrite, 0x20, 1<<virtio.FeatureEventIdx))
	add(op(opWrite, 0x70, 11))
	for q := range uint32(2) {
		base := 0x10000 * (q + 1)
		add(op(opWrite, 0x30, q))
		add(op(opRead, 0x34, 0))
		add(op(opWrite, 0x38, 16))
		add(op(opWrite, 0x80, base))
		add(op(opWrite, 0x90, base+0x100))
		add(op(opWrite, 0xa0, base+0x200))
		add(op(opWrite, 0x44, 1))
	}
	add(op(opWrite, 0x70, 15))
	return s
}

func FuzzMMIO(f *testing.F) {
	init := linuxInit()
	f.Add(byte(0), init)
	f.Add(byte(0), append(append(append([]byte{}, init...), op(opNotify, 0, 1)...), op(opDevice, 0, 0)...))
	f.Add(byte(0), append(append(append([]byte{}, init...), op(opWrite, 0x64, 3)...), op(opWrite, 0x70, 0)...))
	f.Add(byte(1), append(append([]byte{}, init...), op(opWrite, 0x70, 0x80)...))
	f.Add(byte(2), init)
	f.Add(byte(0), append(op(opWrite, 0x70, 1), op(opWrite|0x30, 0x70, 3)...))

	mem := virtiotest.MemoryAt(f, 0, 0x40000)

	f.Fuzz(func(t *testing.T, variant byte, ops []byte) {
		clear(mem.Regions()[0].Mem)
		dev := &virtiotest.Device{
			Type:     virtio.TypeNet,
			Features: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<7,
			MaxSizes: []uint16{256, 16},
			Config:   make([]byte, 12),
		}
		if variant&1 != 0 {
			dev.ResetErr = virtiotest.ErrActivate
		}
		if variant&2 != 0 {
			dev.ActivateErr = virtiotest.ErrActivate
		}
		tr, _ := virtiotest.NewTransport(t, mem, dev)
		var prev uint32
		buf := make([]byte, 8)
		for len(ops) >= 8 {
			o := ops[:8]
			ops = ops[8:]
			off := uint64(binary.LittleEndian.Uint16(o[1:]))
			if off&0x8000 == 0 {
				off %= 0x110 // mostly the registers
			} else {
				off %= 0x1100
			}
			data := buf[:sizeCodes[o[3]%8]]
			copy(data, o[4:])
			switch o[0] % 4 {
			case opRead:
				tr.Read(off, data)
			case opWrite:
				tr.Write(off, data)
			case opDevice:
				if qs := dev.Queues(); dev.Active() && len(qs) > 0 {
					q := qs[int(o[4])%len(qs)]
					if c, err := q.Pop(mem); err == nil && c != nil {
						q.AddUsed(mem, c.Head, 0)
					}
					if q.NeedsNotification(mem) {
						dev.Interrupt().TriggerQueue(0)
					}
					if o[5]&1 != 0 {
						dev.Interrupt().TriggerConfig()
					}
				}
			case opNotify:
				tr.QueueNotify(binary.LittleEndian.Uint32(o[4:]) % 4)
			}

			st := tr.Status()
			base := st &^ (virtio.StatusFailed | virtio.StatusDeviceNeedsReset)
			switch base {
			case 0, sAck, sDrv, sFeat, sLive:
			default:
				t.Fatalf("unreachable status %#x", st)
			}
			if st&virtio.StatusDeviceNeedsReset != 0 && base != sLive {
				t.Fatalf("NEEDS_RESET in status %#x", st)
			}
			if st != 0 && st&prev != prev {
				t.Fatalf("status %#x lost bits of %#x without a reset", st, prev)
			}
			prev = st
			if tr.Activated() != dev.Active() {
				t.Fatalf("transport activated %v, device %v", tr.Activated(), dev.Active())
			}
			if dev.Active() {
				if base != sLive || st&virtio.StatusDeviceNeedsReset != 0 {
					t.Fatalf("active in status %#x", st)
				}
				for i, q := range dev.Queues() {
					if !q.Initialized() {
						t.Fatalf("queue %d active uninitialized", i)
					}
				}
			}
			if acked := tr.AckedFeatures(); acked&^(dev.Features|1<<virtio.FeatureVersion1) != 0 {
				t.Fatalf("acked %#x not offered", acked)
			}
			if is := tr.InterruptStatus(); is&^3 != 0 {
				t.Fatalf("interrupt status %#x", is)
			}
			var m [4]byte
			tr.Read(0, m[:])
			if binary.LittleEndian.Uint32(m[:]) != mmio.MagicValue {
				t.Fatal("magic changed")
			}
		}
	})
}

// FuzzRestoreState restores arbitrary JSON states (registers, queue
// addresses and positions, the device's blob) into a fresh transport:
// it never panics, and a state it accepts gives a working transport that
// saves the same state again, resumes, and resets.
func FuzzRestoreState(f *testing.F) {
	mem := virtiotest.MemoryAt(f, 0, 0x40000)
	seed := func(s mmio.State) {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	q := func(init bool, base uint64, size uint16) virtio.QueueState {
		return virtio.QueueState{MaxSize: 256, Size: size, Ready: true, DescTable: base, AvailRing: base + 16*uint64(size),
			UsedRing: base + 0x1000, Initialized: init, EventIdx: init, NextAvail: 3, NextUsed: 2, NumAdded: 1}
	}
	live := mmio.State{DeviceType: virtio.TypeNet, Status: sLive, AckedFeatures: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx,
		Active: true, Queues: []virtio.QueueState{q(true, 0x10000, 16), q(true, 0x20000, 16)}, Device: []byte("x"), InterruptStatus: 1}
	seed(live)
	seed(mmio.State{DeviceType: virtio.TypeNet, Status: sDrv, Queues: []virtio.QueueState{q(false, 0, 0), q(false, 0, 0)}})
	needs := live
	needs.Status, needs.Active = sLive|sNeeds|sFail, false
	seed(needs)
	f.Add([]byte(`{"device_type":1,"status":15,"active":true,"queues":[{"max_size":256,"size":65535,"ready":true,"desc_table":18446744073709551615,"initialized":true},{}]}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		var s mmio.State
		if json.Unmarshal(data, &s) != nil {
			return
		}
		clear(mem.Regions()[0].Mem)
		dev := &virtiotest.Device{
			Type:     virtio.TypeNet,
			Features: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<7,
			MaxSizes: []uint16{256, 256},
		}
		sd := &snapDev{Device: dev}
		tr, _ := virtiotest.NewTransport(t, mem, sd)
		if err := tr.RestoreState(s); err != nil {
			return
		}
		again, err := tr.SaveState()
		if err != nil {
			t.Fatalf("restored state does not save: %v", err)
		}
		if again.Active != s.Active || again.Status != s.Status || again.AckedFeatures != s.AckedFeatures ||
			len(again.Queues) != len(s.Queues) {
			t.Fatalf("saved %+v after restoring %+v", again, s)
		}
		if dev.Active() != s.Active {
			t.Fatalf("device active %v, state %v", dev.Active(), s.Active)
		}
		if err := tr.Resume(); err != nil {
			t.Fatal(err)
		}
		if qs := dev.Queues(); s.Active {
			for _, q := range qs {
				if c, err := q.Pop(mem); err == nil && c != nil {
					q.AddUsed(mem, c.Head, 0)
				}
			}
		}
		virtiotest.Write32(tr, 0x70, 0)
		if tr.Status() != 0 && tr.Status()&virtio.StatusFailed == 0 {
			t.Fatalf("status %#x after reset", tr.Status())
		}
	})
}

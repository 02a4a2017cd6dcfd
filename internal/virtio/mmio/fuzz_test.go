package mmio_test

import (
	"encoding/binary"
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

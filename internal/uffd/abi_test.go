package uffd

import (
	"encoding/binary"
	"testing"
)

// ioc is the kernel's asm-generic _IOC encoding.
func ioc(dir, typ, nr, size uint32) uint32 { return dir<<30 | size<<16 | typ<<8 | nr }

const (
	iocWrite = 1
	iocRead  = 2
)

func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name     string
		got      uint32
		dir, nr  uint32
		arg      any
		wantSize int // sizeof the C struct, from <linux/userfaultfd.h>
	}{
		{"UFFDIO_API", ioctlAPI, iocRead | iocWrite, 0x3F, uffdioAPI{}, 24},
		{"UFFDIO_REGISTER", ioctlRegister, iocRead | iocWrite, 0x00, uffdioRegister{}, 32},
		{"UFFDIO_UNREGISTER", ioctlUnregister, iocRead, 0x01, uffdioRange{}, 16},
		{"UFFDIO_WAKE", ioctlWake, iocRead, 0x02, uffdioRange{}, 16},
		{"UFFDIO_COPY", ioctlCopy, iocRead | iocWrite, 0x03, uffdioCopy{}, 40},
		{"UFFDIO_ZEROPAGE", ioctlZeropage, iocRead | iocWrite, 0x04, uffdioZeropage{}, 32},
	} {
		size := binary.Size(c.arg)
		if size != c.wantSize {
			t.Errorf("%s: Go struct is %d bytes, the kernel's %d", c.name, size, c.wantSize)
		}
		if want := ioc(c.dir, 0xAA, c.nr, uint32(size)); c.got != want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, want)
		}
	}
	if want := ioc(0, 0xAA, 0, 0); ioctlDevNew != want {
		t.Errorf("USERFAULTFD_IOC_NEW = %#x, want %#x", ioctlDevNew, want)
	}
}

func TestDecodeMsg(t *testing.T) {
	b := make([]byte, MsgSize)
	b[0] = EventPagefault
	binary.LittleEndian.PutUint64(b[8:], PagefaultFlagWrite)
	binary.LittleEndian.PutUint64(b[16:], 0x7f0000123000)
	m, err := DecodeMsg(b)
	if err != nil || m.Event != EventPagefault || m.Flags != PagefaultFlagWrite || m.Address != 0x7f0000123000 {
		t.Fatalf("pagefault: %+v, %v", m, err)
	}
	b[0] = EventRemove
	binary.LittleEndian.PutUint64(b[8:], 0x1000)
	binary.LittleEndian.PutUint64(b[16:], 0x3000)
	if m, err = DecodeMsg(b); err != nil || m.Event != EventRemove || m.Start != 0x1000 || m.End != 0x3000 {
		t.Fatalf("remove: %+v, %v", m, err)
	}
	if _, err := DecodeMsg(b[:MsgSize-1]); err == nil {
		t.Fatal("short message accepted")
	}
}

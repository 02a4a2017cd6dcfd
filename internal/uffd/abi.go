package uffd

import (
	"encoding/binary"
	"fmt"
)

// The userfaultfd ABI from <linux/userfaultfd.h>. golang.org/x/sys/unix
// has only SYS_USERFAULTFD, so the rest is defined here, in one place.
//
// The ioctl numbers follow the asm-generic encoding that x86_64 and arm64
// use: _IOC(dir, type, nr, size) = dir<<30 | size<<16 | type<<8 | nr, with
// _IOC_WRITE = 1 and _IOC_READ = 2, so _IOWR sets dir 3 and _IOR dir 2.
// The type is UFFDIO (0xAA); nr and the struct come from the header:
//
//	UFFDIO_API        _IOWR(0xAA, 0x3F, struct uffdio_api)       24 bytes
//	UFFDIO_REGISTER   _IOWR(0xAA, 0x00, struct uffdio_register)  32 bytes
//	UFFDIO_UNREGISTER _IOR (0xAA, 0x01, struct uffdio_range)     16 bytes
//	UFFDIO_WAKE       _IOR (0xAA, 0x02, struct uffdio_range)     16 bytes
//	UFFDIO_COPY       _IOWR(0xAA, 0x03, struct uffdio_copy)      40 bytes
//	UFFDIO_ZEROPAGE   _IOWR(0xAA, 0x04, struct uffdio_zeropage)  32 bytes
//	USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) on /dev/userfaultfd
//
// (UNREGISTER and WAKE are _IOR although the kernel reads them; the header
// keeps that historical mistake and so must we.) abi_test.go recomputes
// every number from the Go structs' sizes.
const (
	ioctlAPI        = 0xC018AA3F
	ioctlRegister   = 0xC020AA00
	ioctlUnregister = 0x8010AA01
	ioctlWake       = 0x8010AA02
	ioctlCopy       = 0xC028AA03
	ioctlZeropage   = 0xC020AA04
	ioctlDevNew     = 0xAA00
)

// API is UFFD_API, the only API version the kernel knows.
const API = 0xAA

// Features requested with UFFDIO_API.
const (
	// FeatureEventRemove delivers EventRemove when the monitored process
	// discards memory (madvise MADV_DONTNEED/MADV_REMOVE), as the balloon
	// does.
	FeatureEventRemove = 1 << 3
	// FeatureMissingHugetlbfs allows MISSING registration of hugetlbfs
	// memory.
	FeatureMissingHugetlbfs = 1 << 4
)

// Registration modes for UFFDIO_REGISTER.
const (
	// RegisterModeMissing reports faults on pages that are not populated.
	RegisterModeMissing = 1 << 0
)

// Mode bits of UFFDIO_COPY and UFFDIO_ZEROPAGE.
const (
	// ModeDontWake leaves the faulting threads asleep after the copy.
	ModeDontWake = 1 << 0
)

// Event kinds of a uffd_msg.
const (
	EventPagefault = 0x12
	EventFork      = 0x13
	EventRemap     = 0x14
	EventRemove    = 0x15
	EventUnmap     = 0x16
)

// PagefaultFlagWrite marks a page fault caused by a write.
const PagefaultFlagWrite = 1 << 0

// userModeOnly is UFFD_USER_MODE_ONLY, the creation flag squib must not
// set: KVM touches guest memory from kernel mode.
const userModeOnly = 1

// The ioctl argument structs. Every field is a u64/s64, so the Go layout
// is the C layout on every 64-bit architecture.
type (
	uffdioAPI struct {
		API, Features, Ioctls uint64
	}
	uffdioRange struct {
		Start, Len uint64
	}
	uffdioRegister struct {
		Range  uffdioRange
		Mode   uint64
		Ioctls uint64
	}
	uffdioCopy struct {
		Dst, Src, Len, Mode uint64
		Copy                int64
	}
	uffdioZeropage struct {
		Range    uffdioRange
		Mode     uint64
		Zeropage int64
	}
)

// MsgSize is sizeof(struct uffd_msg): a read(2) on a userfaultfd returns
// whole messages of this size.
const MsgSize = 32

// Msg is a decoded uffd_msg.
type Msg struct {
	// Event is one of the Event constants.
	Event uint8
	// For EventPagefault: Flags (PagefaultFlag*) and the faulting Address
	// (page aligned unless UFFD_FEATURE_EXACT_ADDRESS).
	Flags, Address uint64
	// For EventRemove: the removed range [Start, End).
	Start, End uint64
}

// DecodeMsg decodes one uffd_msg. The struct is packed: event at byte 0,
// the argument union from byte 8 (pagefault: flags, address; remove:
// start, end). Userfaultfd only exists on little-endian 64-bit hosts that
// squib runs on, so the fields are little-endian.
func DecodeMsg(b []byte) (Msg, error) {
	if len(b) < MsgSize {
		return Msg{}, fmt.Errorf("uffd_msg: %d bytes, want %d", len(b), MsgSize)
	}
	m := Msg{Event: b[0]}
	a, c := binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])
	switch m.Event {
	case EventPagefault:
		m.Flags, m.Address = a, c
	case EventRemove, EventUnmap:
		m.Start, m.End = a, c
	}
	return m, nil
}

package block

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Fuzz memory: two RAM regions with a hole between them, so buffers can
// straddle the hole, sit in it or lie past the end of RAM.
const (
	fzRing    = 0 // ring of fzSize entries at the start of region 0
	fzSize    = 16
	fzBufMin  = 0x1000 // buffers start past the ring, so the device's writes can never change the descriptors or avail ring it reads
	fzRegion0 = 0x10000
	fzRegion1 = 0x18000
	fzEnd1    = 0x28000
	// The disk: 16 sectors and a partial one the guest must never reach.
	fzSectors  = 16
	fzFileSize = fzSectors*SectorSize + 100
)

// fzTypes are the request types a type selector byte picks, weighted to
// the ones the device serves.
var fzTypes = [8]uint32{TypeIn, TypeOut, TypeFlush, TypeGetID, TypeIn, TypeOut, 2, 11}

// fzLens are lengths a buffer may take by index, the ones that matter to
// a block request.
var fzLens = [8]uint32{headerLen, SectorSize, 1, IDBytes, 2 * SectorSize, SectorSize + 1, 8, 0}

// plantHeader writes a request header at addr (if it is in RAM).
func plantHeader(mem *memory.Guest, addr uint64, typeSel, sector byte) {
	var h [headerLen]byte
	t := fzTypes[typeSel%8]
	if typeSel >= 0xf0 {
		t = uint32(typeSel) << 20 // an arbitrary type
	}
	binary.LittleEndian.PutUint32(h[0:], t)
	// Sectors around the end of the disk, and now and then a huge one.
	s := uint64(sector % (fzSectors + 4))
	if sector >= 0xf8 {
		s = ^uint64(0) - uint64(sector&7)
	}
	binary.LittleEndian.PutUint64(h[8:], s)
	_ = mem.WriteAt(h[:], addr) // outside RAM: nothing to plant
}

func fzAddr(in *virtiotest.FuzzInput) uint64 { return fzBufMin + uint64(in.U24()&0x3ffff) }

// fzLen reads a buffer length: from fzLens when bit 7 of flags is set,
// else a raw 13-bit length.
func fzLen(in *virtiotest.FuzzInput, flags byte) uint32 {
	n := in.U16()
	if flags&0x80 != 0 {
		return fzLens[n%8]
	}
	return uint32(n & 0x1fff)
}

// buildChains adds chains the way a driver would: per chain a buffer
// count, a type and a sector for a header planted in its first buffer,
// then each buffer's address, length and flags.
func buildChains(ring *virtiotest.Ring, in *virtiotest.FuzzInput) {
	for n := 0; in.Len() > 0 && n < fzSize+2; n++ {
		bufs := make([]virtiotest.Buffer, in.U8()%5+1)
		typeSel, sector := in.U8(), in.U8()
		for i := range bufs {
			addr := fzAddr(in)
			flags := in.U8()
			bufs[i] = virtiotest.Buffer{Addr: addr, Len: fzLen(in, flags), Writable: flags&1 != 0}
		}
		if !bufs[0].Writable {
			plantHeader(ring.Mem, bufs[0].Addr, typeSel, sector)
		}
		ring.AddChain(bufs...)
	}
}

// buildRaw plants headers at arbitrary places, writes the whole
// descriptor table verbatim (any flags, any next index, lengths up to
// 4 GiB) and then publishes arbitrary heads, possibly more than the queue
// holds.
func buildRaw(ring *virtiotest.Ring, in *virtiotest.FuzzInput) {
	for range in.U8() % 4 {
		plantHeader(ring.Mem, fzAddr(in), in.U8(), in.U8())
	}
	for i := range uint16(fzSize) {
		addr := fzAddr(in)
		flags := in.U8()
		d := virtio.Descriptor{
			Addr:  addr,
			Len:   fzLen(in, flags),
			Flags: uint16(flags & 0x7),
			Next:  uint16(in.U8() % (2 * fzSize)),
		}
		if flags&0x40 != 0 {
			d.Len <<= 16 // huge: past any region, or towards 32-bit overflow
		}
		ring.SetDesc(i, d)
	}
	var heads []uint16
	for in.Len() > 0 && len(heads) < 2*fzSize {
		heads = append(heads, uint16(in.U8()%(fzSize+4)))
	}
	ring.Publish(heads...)
}

// fzLimiter builds a limiter with small buckets from sel, or an
// unlimited one for 0. Its clock never moves, so once it blocks it stays
// blocked.
func fzLimiter(sel byte) *ratelimit.RateLimiter {
	if sel == 0 {
		return ratelimit.New(nil, nil)
	}
	ops := ratelimit.NewTokenBucket(uint64(sel&3), 0, 1000)
	bw := ratelimit.NewTokenBucket(uint64(sel>>2)*64, 0, 1000)
	return ratelimit.New(bw, ops).WithClock(&ratelimit.ManualClock{})
}

// Seed helpers. A chain: buffer count-1, type selector, sector, then per
// buffer addr (3 bytes), flags, length (2 bytes; an fzLens index when
// flags has bit 7).
func fzChain(typeSel, sector byte, bufs ...[]byte) []byte {
	b := []byte{byte(len(bufs) - 1), typeSel, sector}
	for _, x := range bufs {
		b = append(b, x...)
	}
	return b
}

func fzBuf(addr uint32, flags byte, n uint16) []byte {
	return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), flags, byte(n), byte(n >> 8)}
}

// Buffer shorthands for seeds: header, data of n sectors, status.
func fzHdr(addr uint32) []byte { return fzBuf(addr, 0x80, 0) }
func fzData(addr uint32, writable bool, n uint16) []byte {
	f := byte(0)
	if writable {
		f = 1
	}
	return fzBuf(addr, f, n)
}
func fzStatus(addr uint32) []byte { return fzBuf(addr, 0x81, 2) }

// FuzzRequest feeds the worker random descriptor chains and headers and
// checks that it never panics, writes guest memory only inside writable
// buffers and no more bytes than the used lengths it reports, reports
// lengths that fit the chains, and changes the disk only inside its
// capacity (and not at all when it is read-only).
func FuzzRequest(f *testing.F) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// mode: bit 0 raw table, bit 1 corrupt avail idx, bit 2 EVENT_IDX,
	// bit 3 read-only drive. lim: the rate limiter's buckets.
	read := fzChain(0, 3, fzHdr(0), fzData(0x100, true, 1024), fzStatus(0x2000))
	write := fzChain(1, 5, fzHdr(0x10), fzData(0x800, false, 512), fzStatus(0x2001))
	flush := fzChain(2, 0, fzHdr(0x20), fzStatus(0x2002))
	getID := fzChain(3, 0, fzHdr(0x30), fzBuf(0x3000, 0x81, 3), fzStatus(0x2003))
	f.Add(byte(0), byte(0), read)
	f.Add(byte(0), byte(0), cat(read, write, flush, getID))
	f.Add(byte(8), byte(0), cat(write, read))
	f.Add(byte(4), byte(0), cat(read, read, write))
	f.Add(byte(0), byte(1), cat(read, write, flush))
	f.Add(byte(0), byte(0x21), cat(read, read, write, getID))
	// Malformed and unusual chains, five at most a seed so that the
	// descriptor table (16 entries) does not wrap over them.
	bad := [][]byte{
		fzChain(0, 15, fzHdr(0), fzData(0x100, true, 1024), fzStatus(0x2000)),         // past the end
		fzChain(0, 0xff, fzHdr(0), fzData(0x100, true, 512), fzStatus(0x2000)),        // overflow
		fzChain(1, 0, fzHdr(0), fzData(0x100, true, 512), fzStatus(0x2000)),           // wrong direction
		fzChain(0, 0, fzHdr(0), fzData(0x100, true, 1000), fzStatus(0x2000)),          // unaligned
		fzChain(0, 0, fzBuf(0, 0, 8), fzData(0x100, true, 512), fzStatus(0x2000)),     // short header
		fzChain(6, 0, fzHdr(0), fzData(0x100, false, 512), fzStatus(0x2000)),          // unsupported
		fzChain(0, 0, fzHdr(0), fzData(0xf000, true, 0x1fff), fzStatus(0x2000)),       // into the hole
		fzChain(1, 0, fzHdr(0), fzData(0x100, false, 512), fzData(0x2000, false, 1)),  // no status
		fzChain(0, 0, fzBuf(0, 0, 8), fzBuf(8, 0, 8), fzData(0x100, true, 513)),       // any layout
		fzChain(3, 0, fzHdr(0), fzData(0x100, true, 48), fzData(0x3000, true, 1)),     // big GET_ID
		fzChain(0, 16, fzHdr(0x26ff0), fzData(0x26000, true, 512), fzStatus(0x26fff)), // region 1
	}
	for i := 0; i < len(bad); i += 5 {
		f.Add(byte(0), byte(0), cat(bad[i:min(i+5, len(bad))]...))
	}
	// Raw tables: plants, then 6 bytes a descriptor (addr u24, flags,
	// len u16... with fzLen), next, then the heads.
	raw := func(addr uint32, flags byte, n uint16, next byte) []byte {
		return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), flags, byte(n), byte(n >> 8), next}
	}
	var table []byte
	for i := range fzSize {
		var d []byte
		switch i % 3 {
		case 0:
			d = raw(uint32(i)*0x100, virtio.DescFlagNext|0x80, 0, byte(i+1))
		case 1:
			d = raw(0x4000+uint32(i)*0x400, virtio.DescFlagNext|virtio.DescFlagWrite|0x80, 1, byte(i+1))
		case 2:
			d = raw(0x8000+uint32(i), virtio.DescFlagWrite|0x80, 2, 0)
		}
		table = append(table, d...)
	}
	// Headers planted at descriptors 0, 3 and 6: a read, a write, a
	// GET_ID (into a 512-byte buffer).
	plants := []byte{3, 0, 0, 0, 0, 1, 0, 3, 0, 1, 2, 0, 6, 0, 3, 0}
	f.Add(byte(1), byte(0), cat(plants, table, []byte{0, 3, 6, 9, 19}))
	f.Add(byte(3), byte(0), cat([]byte{0}, table, []byte{0, 0, 0}))

	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot

	// On tmpfs where there is one, so that FLUSH (fdatasync) costs
	// nothing and the fuzzer keeps its pace.
	dir := f.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "squib-block-fuzz"); err == nil {
		dir = d
		f.Cleanup(func() { os.RemoveAll(d) })
	}
	path := filepath.Join(dir, "disk.img")
	content := pattern(0, fzFileSize)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		f.Fatal(err)
	}
	host := open(f, path, false)
	f.Cleanup(func() { host.Close() })
	rw, err := New(Config{ID: "fuzz", File: open(f, path, false)})
	if err != nil {
		f.Fatal(err)
	}
	ro, err := New(Config{ID: "fuzz", File: open(f, path, true), ReadOnly: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { rw.Close(); ro.Close() })
	disk := make([]byte, fzFileSize)

	f.Fuzz(func(t *testing.T, mode, lim byte, data []byte) {
		virtiotest.ClearMemory(mem)
		if _, err := host.WriteAt(content, 0); err != nil {
			t.Fatal(err)
		}
		ring := virtiotest.RingAt(t, mem, fzRing, fzSize)
		in := virtiotest.NewFuzzInput(data)
		if mode&1 != 0 {
			buildRaw(ring, in)
		} else {
			buildChains(ring, in)
		}
		if mode&2 != 0 {
			ring.SetAvailIdx(ring.AvailIdx() + fzSize + 1) // corrupt
		}
		snap.Take(mem)

		q := ring.InitQueue(t, mode&4 != 0)
		dev := rw
		if mode&8 != 0 {
			dev = ro
		}
		wk := dev.newWorker(mem, q, &virtiotest.IRQ{})
		// Drive the worker synchronously: run's select only decides when
		// process runs. First under the fuzzed limiter, then as after
		// the limiter's wake-up, with no limit left.
		wk.limiter = fzLimiter(lim)
		wk.process()
		wk.limiter = ratelimit.New(nil, nil)
		wk.process()

		// Every used entry: a head in range and a length the chain's
		// writable buffers can hold (0 for a chain that does not walk).
		var total uint64
		for _, u := range ring.PopAllUsed(t) {
			if u.Len > 0 {
				if room, ok := writableRoom(ring, uint16(u.ID)); !ok || uint64(u.Len) > room {
					t.Fatalf("used {%d %d} for a chain with %d writable bytes (valid chain: %v)", u.ID, u.Len, room, ok)
				}
			}
			total += uint64(u.Len)
		}

		// Every changed byte is in the ring or a writable buffer, and no
		// more bytes changed than the used lengths account for.
		snap.ExpectWrites(t, virtiotest.Spans{ring.Span()}, ring.WritableSpans(), total)

		// The disk: same size, the tail past the capacity untouched, and
		// nothing changed on a read-only drive.
		if fi, err := host.Stat(); err != nil || fi.Size() != fzFileSize {
			t.Fatalf("disk size changed: %v %v", fi.Size(), err)
		}
		if _, err := host.ReadAt(disk, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(disk[fzSectors*SectorSize:], content[fzSectors*SectorSize:]) {
			t.Fatal("the partial sector past the capacity was written")
		}
		if dev == ro && !bytes.Equal(disk, content) {
			t.Fatal("a read-only disk was written")
		}
	})
}

// writableRoom follows the chain at head and returns the total length of
// its writable buffers, and whether it is a chain at all (no loop, every
// index in range).
func writableRoom(ring *virtiotest.Ring, head uint16) (uint64, bool) {
	descs, ok := ring.Chain(head)
	var room uint64
	for _, d := range descs {
		if d.IsWriteOnly() {
			room += uint64(d.Len)
		}
	}
	return room, ok
}

// FuzzRestoreState restores arbitrary bytes as the device's own state: an
// error or a device that saves a state that restores again and runs,
// never a panic.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{"capacity":2048,"rate_limiter":{"Bandwidth":null,"Ops":null}}`))
	f.Add([]byte(`{"capacity":7,"rate_limiter":{"Bandwidth":{"Size":1000,"OneTimeBurst":5,"RefillTime":100,"Budget":300,"ElapsedNs":12345},"Ops":{"Size":1,"RefillTime":1}}}`))
	f.Add([]byte(`{"capacity":18446744073709551615,"rate_limiter":{"Ops":{"Size":1,"RefillTime":18446744073709,"Budget":18446744073709551615,"ElapsedNs":18446744073709551615}}}`))
	path := tempDisk(f, 4096)
	mem := virtiotest.MemoryAt(f, 0, 0x10000)
	newDev := func(t *testing.T) *Device {
		fl, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(Config{ID: "fuzz", File: fl})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDev(t)
		if err := d.RestoreState(data); err != nil {
			return
		}
		virtiotest.CheckResave(t, d, newDev(t))
		ring := virtiotest.RingAt(t, mem, 0, 16)
		virtiotest.ActivateSuspendResume(t, d, mem, []*virtio.Queue{ring.InitQueue(t, false)})
		d.Close()
	})
}

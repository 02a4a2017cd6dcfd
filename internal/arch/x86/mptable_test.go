package x86

import (
	"testing"
)

func TestWriteMPTable(t *testing.T) {
	for _, cpus := range []int{1, 2, 32, MaxMPTableCPUs} {
		mem := newGuest(t, 128*mib)
		end, err := WriteMPTable(mem, cpus)
		if err != nil {
			t.Fatal(err)
		}
		if want := SystemMemStart + 284 + 20*uint64(cpus); end != want || MPTableSize(cpus) != want-SystemMemStart {
			t.Errorf("%d CPUs: end = %#x, want %#x", cpus, end, want)
		}
		mpf := read(t, mem, SystemMemStart, 16)
		if string(mpf[:4]) != "_MP_" || mpf[8] != 1 || mpf[9] != 4 || sum8(mpf) != 0 {
			t.Errorf("floating pointer = %x", mpf)
		}
		tblAddr := uint64(u32(mpf, 4))
		if tblAddr != SystemMemStart+16 {
			t.Errorf("physptr = %#x", tblAddr)
		}
		hdr := read(t, mem, tblAddr, 44)
		length := uint64(u16(hdr, 4))
		tbl := read(t, mem, tblAddr, length)
		if tblAddr+length != end {
			t.Errorf("table length %d does not reach end", length)
		}
		if string(tbl[:4]) != "PCMP" || tbl[6] != 4 || string(tbl[8:16]) != "FC      " ||
			string(tbl[16:28]) != "000000000000" || u32(tbl, 36) != 0xfee00000 {
			t.Errorf("header = %x", tbl[:44])
		}
		if sum8(tbl) != 0 {
			t.Errorf("%d CPUs: table checksum %#x", cpus, sum8(tbl))
		}
		if got, want := int(u16(tbl, 34)), 1+cpus+1+1+24+2; got != want {
			t.Errorf("entry count %d, want %d", got, want)
		}

		// Walk the entries.
		var procs, buses, ioapics, ints, lints int
		ioapicID := byte(cpus + 1)
		for off := 44; off < len(tbl); {
			e := tbl[off:]
			switch e[0] {
			case 0:
				if int(e[1]) != procs || e[2] != 0x14 || u32(e, 4) != 0x600 || u32(e, 8) != 0x201 {
					t.Errorf("processor entry %d = %x", procs, e[:20])
				}
				if want := byte(1); procs == 0 && e[3] != want|2 || procs > 0 && e[3] != want {
					t.Errorf("processor %d flags %#x", procs, e[3])
				}
				procs++
				off += 20
			case 1:
				if e[1] != 0 || string(e[2:8]) != "ISA   " {
					t.Errorf("bus entry = %x", e[:8])
				}
				buses++
				off += 8
			case 2:
				if e[1] != ioapicID || e[2] != 0x14 || e[3] != 1 || u32(e, 4) != 0xfec00000 {
					t.Errorf("IOAPIC entry = %x", e[:8])
				}
				ioapics++
				off += 8
			case 3:
				if e[1] != 0 || u16(e, 2) != 0 || e[4] != 0 || int(e[5]) != ints || e[6] != ioapicID || int(e[7]) != ints {
					t.Errorf("interrupt entry %d = %x", ints, e[:8])
				}
				ints++
				off += 8
			case 4:
				want := [][]byte{{4, 3, 0, 0, 0, 0, 0, 0}, {4, 1, 0, 0, 0, 0, 0xff, 1}}[lints]
				if string(e[:8]) != string(want) {
					t.Errorf("local interrupt entry %d = %x, want %x", lints, e[:8], want)
				}
				lints++
				off += 8
			default:
				t.Fatalf("unknown entry type %d at %d", e[0], off)
			}
		}
		if procs != cpus || buses != 1 || ioapics != 1 || ints != 24 || lints != 2 {
			t.Errorf("entries: %d CPUs, %d buses, %d IOAPICs, %d interrupts, %d local", procs, buses, ioapics, ints, lints)
		}
	}
}

func TestWriteMPTableErrors(t *testing.T) {
	mem := newGuest(t, 128*mib)
	for _, n := range []int{0, -1, MaxMPTableCPUs + 1} {
		if _, err := WriteMPTable(mem, n); err == nil {
			t.Errorf("%d CPUs accepted", n)
		}
	}
	small := newGuest(t, 0x9fc00)
	if _, err := WriteMPTable(small, 1); err == nil {
		t.Error("MP table past RAM accepted")
	}
}

package x86

import (
	"reflect"
	"testing"
)

func TestWritePVHInfo(t *testing.T) {
	for _, initrd := range []bool{false, true} {
		mem := newGuest(t, 128*mib)
		cfg := PVHConfig{}
		if initrd {
			cfg.InitrdAddr, cfg.InitrdSize = 0x7f00000, 0x4321
		}
		if err := WritePVHInfo(mem, cfg); err != nil {
			t.Fatal(err)
		}
		si := read(t, mem, PVHInfoStart, 56)
		want := E820Map(RAMRegions(128 * mib))
		checks := []struct {
			name      string
			got, want uint64
		}{
			{"magic", uint64(u32(si, 0)), 0x336ec578},
			{"version", uint64(u32(si, 4)), 1},
			{"flags", uint64(u32(si, 8)), 0},
			{"cmdline_paddr", u64(si, 24), 0x20000},
			{"rsdp_paddr", u64(si, 32), 0},
			{"memmap_paddr", u64(si, 40), 0x7000},
			{"memmap_entries", uint64(u32(si, 48)), uint64(len(want))},
		}
		if initrd {
			checks = append(checks,
				struct {
					name      string
					got, want uint64
				}{"nr_modules", uint64(u32(si, 12)), 1},
				struct {
					name      string
					got, want uint64
				}{"modlist_paddr", u64(si, 16), 0x6040})
			mod := read(t, mem, PVHModlistStart, 32)
			if u64(mod, 0) != 0x7f00000 || u64(mod, 8) != 0x4321 || u64(mod, 16) != 0 {
				t.Errorf("modlist entry = %x", mod)
			}
		} else if u32(si, 12) != 0 || u64(si, 16) != 0 {
			t.Errorf("modules without initrd: %d at %#x", u32(si, 12), u64(si, 16))
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("initrd=%v %s = %#x, want %#x", initrd, c.name, c.got, c.want)
			}
		}
		mm := read(t, mem, PVHMemmapStart, uint64(24*len(want)))
		var got []E820Entry
		for i := range want {
			e := mm[24*i:]
			got = append(got, E820Entry{u64(e, 0), u64(e, 8), u32(e, 16)})
			if u32(e, 20) != 0 {
				t.Errorf("memmap %d reserved = %#x", i, u32(e, 20))
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("memmap = %x, want %x", got, want)
		}
	}
}

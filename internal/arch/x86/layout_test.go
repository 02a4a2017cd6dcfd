package x86

import (
	"reflect"
	"testing"
)

func TestRAMRegions(t *testing.T) {
	const gib = 1 << 30
	cases := []struct {
		size uint64
		want []RAMRegion
	}{
		{128 << 20, []RAMRegion{{0, 128 << 20}}},
		{3 * gib, []RAMRegion{{0, 3 * gib}}},
		{4 * gib, []RAMRegion{{0, 3 * gib}, {4 * gib, gib}}},
		{300 * gib, []RAMRegion{{0, 3 * gib}, {4 * gib, 252 * gib}, {512 * gib, 45 * gib}}},
	}
	for _, c := range cases {
		if got := RAMRegions(c.size); !reflect.DeepEqual(got, c.want) {
			t.Errorf("RAMRegions(%d) = %v, want %v", c.size, got, c.want)
		}
	}
}

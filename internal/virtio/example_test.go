package virtio_test

import (
	"errors"
	"fmt"
	"io"

	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// A device's queue handler: drain the queue, hand back every chain (a
// malformed one with 0 bytes), then interrupt the driver if it asked.
func Example() {
	mem, _ := virtiotest.NewMemory(0, 1<<20)
	defer mem.Close()
	ring, _ := virtiotest.NewRing(mem, 0x1000, 16)
	mem.WriteAt([]byte("ping"), 0x8000)
	ring.AddChain(virtiotest.Buffer{Addr: 0x8000, Len: 4}, virtiotest.Buffer{Addr: 0x9000, Len: 64, Writable: true})
	ring.AddChain(virtiotest.Buffer{Addr: 1 << 30, Len: 4}) // outside RAM

	q := ring.Queue() // what the transport hands to Activate
	if err := q.Initialize(mem); err != nil {
		panic(err)
	}
	irq := printInterrupt{}

	for {
		c, err := q.PopOrEnableNotification(mem)
		var ce *virtio.ChainError
		if errors.As(err, &ce) {
			fmt.Println("bad chain:", ce)
			q.AddUsed(mem, ce.Head, 0)
			continue
		}
		if err != nil || c == nil {
			break // a corrupt ring (the device would fail), or empty
		}
		r, w := c.Reader(), c.Writer()
		req, _ := io.ReadAll(&r)
		fmt.Fprintf(&w, "pong to %s", req)
		q.AddUsed(mem, c.Head, uint32(w.Written()))
	}
	if q.NeedsNotification(mem) {
		irq.TriggerQueue(0)
	}
	reply := make([]byte, 12)
	mem.ReadAt(reply, 0x9000)
	fmt.Printf("%s\n", reply)
	// Output:
	// bad chain: invalid descriptor chain (head 2): descriptor buffer outside guest memory: descriptor 2 [0x40000000, +0x4)
	// interrupt for queue 0
	// pong to ping
}

type printInterrupt struct{}

func (printInterrupt) TriggerQueue(i int) error { fmt.Println("interrupt for queue", i); return nil }
func (printInterrupt) TriggerConfig() error     { return nil }

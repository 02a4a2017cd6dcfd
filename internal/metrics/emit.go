package metrics

import (
	"reflect"
	"slices"
	"strconv"
	"sync"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// The JSON line is produced by a hand-written emitter. Each group struct is
// compiled once, by reflection over its json tags, into a layout: the
// literal bytes between consecutive numbers. Writing a group is then a
// loop of append(literal) + AppendUint, with no reflection, maps or
// allocation, and key order is the struct's field order, as with serde.

// slot points at one leaf counter of a group instance; exactly one field
// is set.
type slot struct {
	inc   *IncMetric
	store *StoreMetric
}

// layout is the compiled form of a group type.
type layout struct {
	lits  [][]byte // lits[i] precedes value i; the last closes the object
	isInc []bool   // per value: IncMetric (summed into aggregates) or not
}

var (
	incType   = reflect.TypeFor[IncMetric]()
	storeType = reflect.TypeFor[StoreMetric]()
	layouts   sync.Map // reflect.Type -> *layout
)

// forEachLeaf walks the tagged fields of struct type t in order, calling
// open/close around nested objects and leaf for counters. path is the
// field index path from t.
func forEachLeaf(t reflect.Type, path []int, open func(name string), leaf func(name string, path []int, inc bool), close func()) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("json")
		if name == "" || !f.IsExported() {
			continue
		}
		p := append(path[:len(path):len(path)], i)
		switch f.Type {
		case incType, storeType:
			leaf(name, p, f.Type == incType)
		default:
			if f.Type.Kind() != reflect.Struct {
				panic("metrics: unsupported field type " + f.Type.String())
			}
			open(name)
			forEachLeaf(f.Type, p, open, leaf, close)
			close()
		}
	}
}

// layoutOf returns the layout of group type t, compiling it on first use.
func layoutOf(t reflect.Type) *layout {
	if l, ok := layouts.Load(t); ok {
		return l.(*layout)
	}
	l := &layout{}
	cur := []byte{'{'}
	first := true
	key := func(name string) {
		if !first {
			cur = append(cur, ',')
		}
		first = false
		cur = appendString(cur, name)
		cur = append(cur, ':')
	}
	forEachLeaf(t, nil,
		func(name string) { key(name); cur = append(cur, '{'); first = true },
		func(name string, _ []int, inc bool) {
			key(name)
			l.lits = append(l.lits, cur)
			l.isInc = append(l.isInc, inc)
			cur = nil
		},
		func() { cur = append(cur, '}'); first = false },
	)
	l.lits = append(l.lits, append(cur, '}'))
	v, _ := layouts.LoadOrStore(t, l)
	return v.(*layout)
}

// group is one instance of a group struct, ready to emit.
type group struct {
	lay   *layout
	slots []slot
}

// newGroup compiles the struct p points to.
func newGroup(p any) group {
	v := reflect.ValueOf(p).Elem()
	g := group{lay: layoutOf(v.Type())}
	forEachLeaf(v.Type(), nil, func(string) {}, func(_ string, path []int, inc bool) {
		a := v.FieldByIndex(path).Addr().Interface()
		if inc {
			g.slots = append(g.slots, slot{inc: a.(*IncMetric)})
		} else {
			g.slots = append(g.slots, slot{store: a.(*StoreMetric)})
		}
	}, func() {})
	return g
}

// commit records the value an IncMetric's baseline moves to once the line
// holding its delta has been written.
type commit struct {
	m *IncMetric
	v uint64
}

// writer accumulates one line. Its buffers are reused across writes.
type writer struct {
	b       []byte
	nums    []uint64
	agg     []uint64
	commits []commit
}

// collect reads g's values into w.nums: deltas for counters (whose new
// baselines are queued in w.commits) and current values for stores.
func (w *writer) collect(g *group) []uint64 {
	w.nums = w.nums[:0]
	for _, s := range g.slots {
		if s.inc != nil {
			c := s.inc.cur.Load()
			w.nums = append(w.nums, c-s.inc.prev.Load())
			w.commits = append(w.commits, commit{s.inc, c})
		} else {
			w.nums = append(w.nums, s.store.v.Load())
		}
	}
	return w.nums
}

// emit appends a group object with the given values.
func (w *writer) emit(l *layout, nums []uint64) {
	for i, n := range nums {
		w.b = append(w.b, l.lits[i]...)
		w.b = strconv.AppendUint(w.b, n, 10)
	}
	w.b = append(w.b, l.lits[len(nums)]...)
}

// part is one top-level entry of the line.
type part interface {
	emit(w *writer)
}

// staticPart is a fixed top-level group.
type staticPart struct {
	key []byte // `,"name":`
	g   group
}

func (p *staticPart) emit(w *writer) {
	w.b = append(w.b, p.key...)
	w.emit(p.g.lay, w.collect(&p.g))
}

// device is one registered per-device group.
type device[T any] struct {
	m *T
	g group
}

// family is a per-device metrics family (block, net, pmem): one
// "<name>_<id>" object per device, in byte order of the IDs (Firecracker
// keeps them in a BTreeMap), then the "<name>" aggregate. The aggregate
// sums the counters' deltas; its StoreMetric fields (the min_us and max_us
// of latency aggregates) stay 0, because Firecracker builds the aggregate
// from a fresh struct and only adds counters into it.
type family[T any] struct {
	name string
	lay  *layout
	mu   sync.RWMutex
	devs map[string]*device[T]
	ids  []string // sorted
}

func newFamily[T any](name string) *family[T] {
	return &family[T]{name: name, lay: layoutOf(reflect.TypeFor[T]()), devs: map[string]*device[T]{}}
}

// get returns the metrics of device id, creating them if needed.
func (f *family[T]) get(id string) *T {
	f.mu.RLock()
	d := f.devs[id]
	f.mu.RUnlock()
	if d != nil {
		return d.m
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.devs[id]; d != nil {
		return d.m
	}
	m := new(T)
	f.devs[id] = &device[T]{m: m, g: newGroup(m)}
	i, _ := slices.BinarySearch(f.ids, id)
	f.ids = slices.Insert(f.ids, i, id)
	return m
}

// remove forgets device id.
func (f *family[T]) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devs[id]; !ok {
		return
	}
	delete(f.devs, id)
	i, _ := slices.BinarySearch(f.ids, id)
	f.ids = slices.Delete(f.ids, i, i+1)
}

func (f *family[T]) emit(w *writer) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := len(f.lay.isInc)
	w.agg = slices.Grow(w.agg[:0], n)[:n]
	clear(w.agg)
	for _, id := range f.ids {
		d := f.devs[id]
		w.b = append(w.b, ',', '"')
		w.b = append(w.b, f.name...)
		w.b = append(w.b, '_')
		w.b = appendStringContent(w.b, id)
		w.b = append(w.b, '"', ':')
		nums := w.collect(&d.g)
		w.emit(f.lay, nums)
		for i, inc := range f.lay.isInc {
			if inc {
				w.agg[i] += nums[i]
			}
		}
	}
	w.b = append(w.b, ',', '"')
	w.b = append(w.b, f.name...)
	w.b = append(w.b, '"', ':')
	w.emit(f.lay, w.agg)
}

// appendString and appendStringContent quote with serde_json's rules
// (jsonx), so metrics lines read as Firecracker's.
func appendString(b []byte, s string) []byte { return jsonx.AppendString(b, s) }

func appendStringContent(b []byte, s string) []byte { return jsonx.AppendStringContent(b, s) }

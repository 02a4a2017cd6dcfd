package mmds

import (
	"errors"
	"sync"
	"sync/atomic"
)

// DefaultSizeLimit is the default --mmds-size-limit: Firecracker defaults it
// to the API's HTTP payload limit, 51200 bytes.
const DefaultSizeLimit = 51200

// Data-store errors. Their texts are Firecracker's MmdsDatastoreError
// messages, without the API's category prefix (see FaultMessage).
var (
	// ErrNotInitialized is returned by Patch before any successful Put.
	ErrNotInitialized = errors.New("The MMDS data store is not initialized.")
	// ErrLimitExceeded is returned when the serialized store would exceed the
	// size limit; the store is left unchanged. The API answers 413.
	ErrLimitExceeded = errors.New("The MMDS patch request doesn't fit.")
	// ErrNotFound is returned by Query for a path that names nothing.
	ErrNotFound = errors.New("The MMDS resource does not exist.")
	// ErrUnsupportedValueType is returned by Query when a value other than an
	// object or a string is requested in IMDS format.
	ErrUnsupportedValueType = errors.New("Cannot retrieve value. The value has an unsupported type.")
)

// Format selects how Query renders a value.
type Format uint8

const (
	// FormatIMDS is the EC2 IMDS text format (the default for guests).
	FormatIMDS Format = iota
	// FormatJSON is compact JSON, requested with Accept: application/json.
	FormatJSON
)

// snapshot is one immutable state of the data.
type snapshot struct {
	root        any
	encoded     []byte // appendJSON(root); kept to make Get and size checks cheap
	initialized bool
}

// Store is the MMDS data store plus the settings (version, IMDS
// compatibility) that Firecracker keeps next to it. The zero value is not
// usable; call NewStore.
type Store struct {
	mu    sync.Mutex // serializes writers; readers use cur
	limit int        // guarded by mu
	cur   atomic.Pointer[snapshot]

	version    atomic.Uint32
	imdsCompat atomic.Bool
}

// NewStore returns an empty, uninitialized store whose serialized size may
// not exceed limit bytes (pass DefaultSizeLimit unless --mmds-size-limit
// says otherwise). Version is V1 and IMDS compatibility off, as in
// Firecracker.
func NewStore(limit int) *Store {
	s := &Store{limit: max(limit, 0)}
	s.cur.Store(&snapshot{encoded: []byte("null")})
	return s
}

// SetSizeLimit changes the size limit. It applies to later changes only.
func (s *Store) SetSizeLimit(limit int) {
	s.mu.Lock()
	s.limit = max(limit, 0)
	s.mu.Unlock()
}

// SizeLimit reports the size limit in bytes.
func (s *Store) SizeLimit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

// Put replaces the whole store with the JSON document raw (any JSON value)
// and marks the store initialized. It returns ErrLimitExceeded, leaving the
// store untouched, when the document is too large, and an ErrInvalidJSON
// error when raw is not JSON.
func (s *Store) Put(raw []byte) error {
	v, err := parseJSON(raw)
	if err != nil {
		return err
	}
	return s.put(v)
}

// PutValue is Put for an already decoded value (anything encoding/json can
// marshal, including json.RawMessage).
func (s *Store) PutValue(v any) error {
	t, err := normalize(v)
	if err != nil {
		return err
	}
	return s.put(t)
}

func (s *Store) put(v any) error {
	enc := appendJSON(nil, v)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(enc) > s.limit {
		return ErrLimitExceeded
	}
	s.cur.Store(&snapshot{root: v, encoded: enc, initialized: true})
	return nil
}

// Patch applies the JSON document raw as an RFC 7396 merge patch. It fails
// with ErrNotInitialized before the first successful Put, and with
// ErrLimitExceeded (store unchanged) when the result would be too large.
func (s *Store) Patch(raw []byte) error {
	v, err := parseJSON(raw)
	if err != nil {
		return err
	}
	return s.patch(v)
}

// PatchValue is Patch for an already decoded value.
func (s *Store) PatchValue(v any) error {
	t, err := normalize(v)
	if err != nil {
		return err
	}
	return s.patch(t)
}

func (s *Store) patch(p any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	if !old.initialized {
		return ErrNotInitialized
	}
	root := mergePatch(old.root, p)
	enc := appendJSON(nil, root)
	if len(enc) > s.limit {
		return ErrLimitExceeded
	}
	s.cur.Store(&snapshot{root: root, encoded: enc, initialized: true})
	return nil
}

// Get returns the store as compact JSON with sorted keys, as GET /mmds
// answers: "{}" when the store was never set or holds null. The caller owns
// the returned slice.
func (s *Store) Get() []byte {
	snap := s.cur.Load()
	if snap.root == nil {
		return []byte("{}")
	}
	return append([]byte(nil), snap.encoded...)
}

// Initialized reports whether a Put has succeeded.
func (s *Store) Initialized() bool { return s.cur.Load().initialized }

// Query returns the value at path (a request path such as
// "/latest/meta-data/ami-id", with at most one trailing '/', which is
// ignored) rendered in format, or in IMDS format whatever format says when
// IMDS compatibility is on. Errors: ErrNotFound, ErrUnsupportedValueType.
func (s *Store) Query(path string, format Format) ([]byte, error) {
	root := s.cur.Load().root
	// A trailing '/' would make the pointer ask for an empty key.
	if n := len(path); n > 0 && path[n-1] == '/' {
		path = path[:n-1]
	}
	v, ok := pointer(root, path)
	if !ok {
		return nil, ErrNotFound
	}
	if format == FormatJSON && !s.IMDSCompat() {
		return appendJSON(nil, v), nil
	}
	return formatIMDS(v)
}

// SetVersion sets the MMDS version the guest service enforces.
func (s *Store) SetVersion(v Version) { s.version.Store(uint32(v)) }

// Version reports the configured MMDS version (V1 by default).
func (s *Store) Version() Version { return Version(s.version.Load()) }

// SetIMDSCompat turns EC2 IMDS compatibility on or off: when on, guests
// always get the IMDS text format, whatever their Accept header says.
func (s *Store) SetIMDSCompat(on bool) { s.imdsCompat.Store(on) }

// IMDSCompat reports whether IMDS compatibility is on.
func (s *Store) IMDSCompat() bool { return s.imdsCompat.Load() }

// ApplyConfig copies the store-side settings of a validated PUT /mmds/config
// (version and imds_compat) onto the store.
func (s *Store) ApplyConfig(c Config) {
	s.SetVersion(c.Version)
	s.SetIMDSCompat(c.IMDSCompat)
}

package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
)

// Magic numbers: Firecracker's, one per architecture.
const (
	MagicX86_64  uint64 = 0x0710_1984_8664_0000
	MagicAarch64 uint64 = 0x0710_1984_AAAA_0000
)

// Version is a data-format version, major.minor.patch.
type Version struct{ Major, Minor, Patch uint16 }

// String renders the version as --describe-snapshot prints it.
func (v Version) String() string { return fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Current is the format squib writes (and Firecracker's current number;
// --snapshot-version prints it).
var Current = Version{11, 0, 0}

// MaxStateSize bounds what Decode reads: a state file is small (registers
// and device state, plus the MMDS data store), and a larger file is
// refused before it is read into memory.
const MaxStateSize = 64 << 20

// Layout: magic u64, version 3×u16, payload length u64, payload, CRC64 of
// everything before it. All little-endian.
const (
	headerSize  = 8 + 6 + 8
	trailerSize = 8
)

var crcTable = crc64.MakeTable(0x95AC9329AC4BC9B5)

// Checksum is Firecracker's snapshot CRC64: Jones polynomial, reflected,
// initial value 0, no final xor (stdlib crc64 inverts before and after,
// so the inversions are undone here).
func Checksum(sum uint64, p []byte) uint64 { return ^crc64.Update(^sum, crcTable, p) }

// Errors of Decode. Each is wrapped with the detail.
var (
	ErrTooShort = errors.New("IO Error: File too short to contain CRC")
	ErrCRC      = errors.New("CRC64 validation failed")
	ErrMagic    = errors.New("Invalid magic value")
	ErrVersion  = errors.New("Unsupported snapshot version")
	ErrFormat   = errors.New("Malformed snapshot file")
	ErrTooLarge = errors.New("Snapshot file too large")
)

// Encode frames payload as a state file.
func Encode(payload []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(payload)+trailerSize)
	binary.LittleEndian.PutUint64(b[0:], MagicX86_64)
	binary.LittleEndian.PutUint16(b[8:], Current.Major)
	binary.LittleEndian.PutUint16(b[10:], Current.Minor)
	binary.LittleEndian.PutUint16(b[12:], Current.Patch)
	binary.LittleEndian.PutUint64(b[14:], uint64(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint64(b, Checksum(0, b))
}

// Decode checks a state file's framing and returns its version and
// payload (a subslice of b). The checksum is checked first, so a
// corrupted file is reported as such rather than as a bad field.
func Decode(b []byte) (Version, []byte, error) {
	if len(b) < trailerSize {
		return Version{}, nil, ErrTooShort
	}
	body, trailer := b[:len(b)-trailerSize], b[len(b)-trailerSize:]
	if want, got := binary.LittleEndian.Uint64(trailer), Checksum(0, body); want != got {
		return Version{}, nil, fmt.Errorf("%w: the file's checksum is %#016x, its contents give %#016x (corrupt or truncated file)", ErrCRC, want, got)
	}
	v, err := header(body)
	if err != nil {
		return v, nil, err
	}
	n := binary.LittleEndian.Uint64(body[14:])
	if n != uint64(len(body)-headerSize) {
		return v, nil, fmt.Errorf("%w: the header announces %d bytes of state, the file holds %d", ErrFormat, n, len(body)-headerSize)
	}
	return v, body[headerSize:], nil
}

// header checks the magic number and version at the start of b.
func header(b []byte) (Version, error) {
	if len(b) < headerSize {
		return Version{}, fmt.Errorf("%w: %d bytes is too short for the header", ErrFormat, len(b))
	}
	switch magic := binary.LittleEndian.Uint64(b); magic {
	case MagicX86_64:
	case MagicAarch64:
		return Version{}, fmt.Errorf("%w: the snapshot was taken on aarch64; this squib restores x86_64 snapshots", ErrMagic)
	default:
		return Version{}, fmt.Errorf("%w: %#016x is not a squib or Firecracker snapshot of any architecture", ErrMagic, magic)
	}
	v := Version{binary.LittleEndian.Uint16(b[8:]), binary.LittleEndian.Uint16(b[10:]), binary.LittleEndian.Uint16(b[12:])}
	// Firecracker's rule: same major, minor no newer than ours.
	if v.Major != Current.Major || v.Minor > Current.Minor {
		return v, fmt.Errorf("%w: %s (this squib reads v%d.0.0 to %s)", ErrVersion, v, Current.Major, Current)
	}
	return v, nil
}

// ReadFile reads and decodes a state file.
func ReadFile(path string) (Version, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return Version{}, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Version{}, nil, err
	}
	if fi.Size() > MaxStateSize {
		return Version{}, nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, fi.Size(), MaxStateSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxStateSize+1))
	if err != nil {
		return Version{}, nil, err
	}
	return Decode(b)
}

// Describe returns the data-format version of a state file, for
// --describe-snapshot. Like Firecracker it checks the checksum too.
func Describe(path string) (Version, error) {
	v, _, err := ReadFile(path)
	return v, err
}

// WriteFile writes a framed state file atomically: to a temporary file in
// the same directory, synced, then renamed over path.
func WriteFile(path string, payload []byte) error {
	return WriteAtomic(path, func(f *os.File) error {
		_, err := f.Write(Encode(payload))
		return err
	})
}

// WriteAtomic creates a temporary file next to path, lets write fill it,
// syncs it and renames it to path. On any failure the temporary file is
// removed and path is untouched.
func WriteAtomic(path string, write func(f *os.File) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

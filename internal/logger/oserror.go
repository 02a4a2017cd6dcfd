package logger

import (
	"errors"
	"strconv"
	"syscall"
)

// OSErrorText renders err the way Rust's std::io::Error displays an OS
// error in a Firecracker release build, for example
// "No such file or directory (os error 2)". Firecracker is linked against
// musl, so the description is musl's strerror text (ENOMEM reads
// "Out of memory", not glibc's "Cannot allocate memory"). The path of a
// *os.PathError is dropped, as Rust's message has none. Errors that carry
// no errno are returned as err.Error(); a nil error gives "".
func OSErrorText(err error) string {
	if err == nil {
		return ""
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	return ErrnoText(errno) + " (os error " + strconv.Itoa(int(errno)) + ")"
}

// ErrnoText returns musl's strerror description of errno, without the
// "(os error N)" suffix that OSErrorText adds.
func ErrnoText(errno syscall.Errno) string {
	if s, ok := muslStrerror[errno]; ok {
		return s
	}
	// musl's catch-all for codes it does not enumerate.
	return "No error information"
}

// muslStrerror is musl 1.2's src/errno/__strerror.h for Linux. Go's own
// Errno.Error() texts are lower-case glibc wording, which clients that match
// Firecracker's messages would not recognise.
var muslStrerror = map[syscall.Errno]string{
	syscall.EILSEQ:          "Illegal byte sequence",
	syscall.EDOM:            "Domain error",
	syscall.ERANGE:          "Result not representable",
	syscall.ENOTTY:          "Not a tty",
	syscall.EACCES:          "Permission denied",
	syscall.EPERM:           "Operation not permitted",
	syscall.ENOENT:          "No such file or directory",
	syscall.ESRCH:           "No such process",
	syscall.EEXIST:          "File exists",
	syscall.EOVERFLOW:       "Value too large for data type",
	syscall.ENOSPC:          "No space left on device",
	syscall.ENOMEM:          "Out of memory",
	syscall.EBUSY:           "Resource busy",
	syscall.EINTR:           "Interrupted system call",
	syscall.EAGAIN:          "Resource temporarily unavailable",
	syscall.ESPIPE:          "Invalid seek",
	syscall.EXDEV:           "Cross-device link",
	syscall.EROFS:           "Read-only file system",
	syscall.ENOTEMPTY:       "Directory not empty",
	syscall.ECONNRESET:      "Connection reset by peer",
	syscall.ETIMEDOUT:       "Operation timed out",
	syscall.ECONNREFUSED:    "Connection refused",
	syscall.EHOSTDOWN:       "Host is down",
	syscall.EHOSTUNREACH:    "Host is unreachable",
	syscall.EADDRINUSE:      "Address in use",
	syscall.EPIPE:           "Broken pipe",
	syscall.EIO:             "I/O error",
	syscall.ENXIO:           "No such device or address",
	syscall.ENOTBLK:         "Block device required",
	syscall.ENODEV:          "No such device",
	syscall.ENOTDIR:         "Not a directory",
	syscall.EISDIR:          "Is a directory",
	syscall.ETXTBSY:         "Text file busy",
	syscall.ENOEXEC:         "Exec format error",
	syscall.EINVAL:          "Invalid argument",
	syscall.E2BIG:           "Argument list too long",
	syscall.ELOOP:           "Symbolic link loop",
	syscall.ENAMETOOLONG:    "Filename too long",
	syscall.ENFILE:          "Too many open files in system",
	syscall.EMFILE:          "No file descriptors available",
	syscall.EBADF:           "Bad file descriptor",
	syscall.ECHILD:          "No child process",
	syscall.EFAULT:          "Bad address",
	syscall.EFBIG:           "File too large",
	syscall.EMLINK:          "Too many links",
	syscall.ENOLCK:          "No locks available",
	syscall.EDEADLK:         "Resource deadlock would occur",
	syscall.ENOTRECOVERABLE: "State not recoverable",
	syscall.EOWNERDEAD:      "Previous owner died",
	syscall.ECANCELED:       "Operation canceled",
	syscall.ENOSYS:          "Function not implemented",
	syscall.ENOMSG:          "No message of desired type",
	syscall.EIDRM:           "Identifier removed",
	syscall.ENOSTR:          "Device not a stream",
	syscall.ENODATA:         "No data available",
	syscall.ETIME:           "Device timeout",
	syscall.ENOSR:           "Out of streams resources",
	syscall.ENOLINK:         "Link has been severed",
	syscall.EPROTO:          "Protocol error",
	syscall.EBADMSG:         "Bad message",
	syscall.EBADFD:          "File descriptor in bad state",
	syscall.ENOTSOCK:        "Not a socket",
	syscall.EDESTADDRREQ:    "Destination address required",
	syscall.EMSGSIZE:        "Message too large",
	syscall.EPROTOTYPE:      "Protocol wrong type for socket",
	syscall.ENOPROTOOPT:     "Protocol not available",
	syscall.EPROTONOSUPPORT: "Protocol not supported",
	syscall.ESOCKTNOSUPPORT: "Socket type not supported",
	syscall.ENOTSUP:         "Not supported", // == EOPNOTSUPP on Linux
	syscall.EPFNOSUPPORT:    "Protocol family not supported",
	syscall.EAFNOSUPPORT:    "Address family not supported by protocol",
	syscall.EADDRNOTAVAIL:   "Address not available",
	syscall.ENETDOWN:        "Network is down",
	syscall.ENETUNREACH:     "Network unreachable",
	syscall.ENETRESET:       "Connection reset by network",
	syscall.ECONNABORTED:    "Connection aborted",
	syscall.ENOBUFS:         "No buffer space available",
	syscall.EISCONN:         "Socket is connected",
	syscall.ENOTCONN:        "Socket not connected",
	syscall.ESHUTDOWN:       "Cannot send after socket shutdown",
	syscall.EALREADY:        "Operation already in progress",
	syscall.EINPROGRESS:     "Operation in progress",
	syscall.ESTALE:          "Stale file handle",
	syscall.EUCLEAN:         "Data consistency error",
	syscall.ENAVAIL:         "Resource not available",
	syscall.EREMOTEIO:       "Remote I/O error",
	syscall.EDQUOT:          "Quota exceeded",
	syscall.ENOMEDIUM:       "No medium found",
	syscall.EMEDIUMTYPE:     "Wrong medium type",
	syscall.EMULTIHOP:       "Multihop attempted",
	syscall.ENOKEY:          "Required key not available",
	syscall.EKEYEXPIRED:     "Key has expired",
	syscall.EKEYREVOKED:     "Key has been revoked",
	syscall.EKEYREJECTED:    "Key was rejected by service",
}

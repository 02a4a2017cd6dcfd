// Package loader puts a Linux guest kernel, its initrd and its command line
// into guest memory, the way Firecracker does on x86_64.
//
// Two kernel formats are accepted, told apart by their first bytes:
//
//   - an uncompressed 64-bit ELF vmlinux: PT_LOAD segments go to their
//     physical addresses, and a Xen PVH note, when present, gives the
//     32-bit PVH entry point that Firecracker prefers;
//   - a bzImage (boot protocol 2.12 or later with a 64-bit entry): the
//     protected-mode part goes to code32_start, the 64-bit entry is 0x200
//     past it, and the image's own setup header seeds the zero page.
//
// Everything read from an image is untrusted: every offset and size is
// checked against the file and, through memory.Guest, against guest RAM,
// and a malformed image is an error, never a panic. Nothing is written to
// guest memory until the whole image has been validated, so a rejected
// kernel leaves RAM untouched (short reads of a file that shrank while
// being read are the exception).
//
// The initrd goes at the top of the low RAM region, page aligned down, and
// the command line is built with Cmdline, which keeps Firecracker's split
// between boot arguments and the init arguments after " -- ".
package loader

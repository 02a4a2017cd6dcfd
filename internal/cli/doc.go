// Package cli parses squib's command line with exactly the rules of
// Firecracker's own argument parser (src/utils/src/arg_parser.rs), so that
// scripts written for firecracker and jailer behave the same with squib and
// get the same error texts.
//
// The rules differ from the standard flag package on purpose:
//
//   - Only "--name value" and "--flag" are accepted. "--name=value", "-x"
//     and bare words are unexpected arguments.
//   - A value may not start with "--"; "--api-sock --id" is a missing value
//     for api-sock, not a socket named "--id".
//   - Giving an argument twice is an error unless it allows multiple values
//     (the jailer's --cgroup and --resource-limit).
//   - "--help", "-h" or "--version" anywhere before "--" (even where a value
//     is expected) skips every other check; the caller prints and exits.
//   - The first "--" ends the options; what follows is returned untouched as
//     extra arguments (the jailer hands them on to firecracker).
//   - After the line is read, required, requires and forbids rules are
//     checked argument by argument in byte order of their names, so the
//     reported error is the one Firecracker would report.
//
// Unlike Firecracker, parsing never panics and accepts argv that is not
// valid UTF-8 (Rust's env::args aborts on it).
package cli

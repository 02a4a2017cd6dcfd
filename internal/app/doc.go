// Package app is squib's composition root: it parses the command line,
// sets up the logger and metrics, the MMDS store, the controller and the
// API server, boots from a config file when asked, and maps every outcome
// to Firecracker's exit codes.
package app

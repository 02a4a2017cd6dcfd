package cli

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzParse feeds random command lines, split on NUL bytes as the kernel
// splits argv, and checks that Parse never panics and keeps its promises.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"--exec-file\x00foo",
		"--exec-file\x00foo\x00--cgroup\x00a\x00--cgroup\x00b\x00--\x00--x",
		"--exec-file=foo",
		"--api-sock\x00--id\x00bar",
		"--no-api\x00--no-api",
		"--seccomp-filter\x000\x00--no-seccomp\x00--exec-file\x00f",
		"-h\x00--bogus",
		"--version\x00--\x00--help",
		"--\x00--\x00--",
		"---\x00-\x00--\x80\xff",
	} {
		f.Add([]byte(seed))
	}
	p := testParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		argv := strings.Split(string(data), "\x00")
		a, err := p.Parse(argv)

		opts := argv
		if i := slices.Index(argv, "--"); i >= 0 {
			opts = argv[:i]
		}
		help := slices.Contains(opts, "--help") || slices.Contains(opts, "-h")
		version := !help && slices.Contains(opts, "--version")

		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || a != nil || pe.Error() == "" || pe.Debug() == "" {
				t.Fatalf("Parse(%q) = %v, %#v", argv, a, err)
			}
			if help || version {
				t.Fatalf("Parse(%q) failed despite help/version: %v", argv, err)
			}
			return
		}
		if a.HelpRequested() != help || a.VersionRequested() != version {
			t.Fatalf("Parse(%q): help=%v version=%v", argv, a.HelpRequested(), a.VersionRequested())
		}
		if len(a.Extra()) != len(argv)-len(opts)-min(1, len(argv)-len(opts)) {
			t.Fatalf("Parse(%q): Extra() = %q", argv, a.Extra())
		}
		for _, name := range p.names {
			v, _ := a.Value(name)
			vals := a.Values(name)
			if !help && !version && (strings.HasPrefix(v, "--") || slices.ContainsFunc(vals, func(s string) bool {
				return strings.HasPrefix(s, "--")
			})) {
				t.Fatalf("Parse(%q): %s got a value starting with --", argv, name)
			}
			_ = a.Flag(name)
		}
	})
}

package cli

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// testParser mirrors the parser used by arg_parser.rs's own tests.
func testParser() *Parser {
	return NewParser(
		Arg{Name: "exec-file", Required: true, TakesValue: true, Help: "'exec-file' info."},
		Arg{Name: "no-api", Requires: "config-file", Help: "'no-api' info."},
		Arg{Name: "api-sock", TakesValue: true, Default: "socket", HasDefault: true, Help: "'api-sock' info."},
		Arg{Name: "id", TakesValue: true, Default: "instance", HasDefault: true, Help: "'id' info."},
		Arg{Name: "seccomp-filter", TakesValue: true, Help: "'seccomp-filter' info.", Forbids: []string{"no-seccomp"}},
		Arg{Name: "no-seccomp", Help: "'-no-seccomp' info.", Forbids: []string{"seccomp-filter"}},
		Arg{Name: "config-file", TakesValue: true, Help: "'config-file' info."},
		Arg{Name: "describe-snapshot", TakesValue: true, Help: "'describe-snapshot' info."},
		Arg{Name: "cgroup", AllowMultiple: true, Help: "'cgroup' info."},
	)
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		kind ErrorKind
		text string
	}{
		{"missing value at end", []string{"--exec-file", "foo", "--describe-snapshot"},
			MissingValue, "The argument 'describe-snapshot' requires a value, but none was supplied."},
		{"missing value before separator", []string{"--exec-file", "foo", "--describe-snapshot", "--"},
			MissingValue, "The argument 'describe-snapshot' requires a value, but none was supplied."},
		{"value may not start with --", []string{"--exec-file", "foo", "--api-sock", "--id", "bar"},
			MissingValue, "The argument 'api-sock' requires a value, but none was supplied."},
		{"value --x even if unknown", []string{"--exec-file", "--x"},
			MissingValue, "The argument 'exec-file' requires a value, but none was supplied."},
		{"missing value for id", []string{"--exec-file", "foo", "--api-sock", "bar", "--id"},
			MissingValue, "The argument 'id' requires a value, but none was supplied."},
		{"multiple needs a value", []string{"--exec-file", "f", "--cgroup", "--cgroup", "2"},
			MissingValue, "The argument 'cgroup' requires a value, but none was supplied."},
		{"duplicate value arg", []string{"--exec-file", "foo", "--api-sock", "bar", "--api-sock", "foobar"},
			DuplicateArgument, "The argument 'api-sock' was provided more than once."},
		{"duplicate flag", []string{"--exec-file", "foo", "--no-seccomp", "--no-seccomp"},
			DuplicateArgument, "The argument 'no-seccomp' was provided more than once."},
		{"duplicate before missing value", []string{"--id", "a", "--id"},
			DuplicateArgument, "The argument 'id' was provided more than once."},
		{"required missing", []string{"--api-sock", "foo"},
			MissingArgument, "Argument 'exec-file' required, but not found."},
		{"required missing on empty line", nil,
			MissingArgument, "Argument 'exec-file' required, but not found."},
		{"unknown argument", []string{"--exec-file", "foo", "--api-sock", "bar", "--invalid-arg"},
			UnexpectedArgument, "Found argument 'invalid-arg' which wasn't expected, or isn't valid in this context."},
		{"name=value", []string{"--exec-file=foo"},
			UnexpectedArgument, "Found argument 'exec-file=foo' which wasn't expected, or isn't valid in this context."},
		{"single dash", []string{"-x"},
			UnexpectedArgument, "Found argument '-x' which wasn't expected, or isn't valid in this context."},
		{"triple dash", []string{"---exec-file", "foo"},
			UnexpectedArgument, "Found argument '-exec-file' which wasn't expected, or isn't valid in this context."},
		{"bare word", []string{"foo"},
			UnexpectedArgument, "Found argument 'foo' which wasn't expected, or isn't valid in this context."},
		{"word after flag", []string{"--exec-file", "foo", "--config-file", "bar", "--no-api", "foobar"},
			UnexpectedArgument, "Found argument 'foobar' which wasn't expected, or isn't valid in this context."},
		{"word after value", []string{"--exec-file", "foo", "--api-sock", "bar", "foobar"},
			UnexpectedArgument, "Found argument 'foobar' which wasn't expected, or isn't valid in this context."},
		{"empty word", []string{""},
			UnexpectedArgument, "Found argument '' which wasn't expected, or isn't valid in this context."},
		{"unexpected before required check", []string{"bogus"},
			UnexpectedArgument, "Found argument 'bogus' which wasn't expected, or isn't valid in this context."},
		{"requires", []string{"--exec-file", "foo", "--api-sock", "bar", "--id", "foobar", "--no-api"},
			MissingArgument, "Argument 'config-file' required, but not found."},
		{"forbids, filter first", []string{"--exec-file", "foo", "--seccomp-filter", "0", "--no-seccomp"},
			ForbiddenArgument, "Argument 'seccomp-filter' cannot be used together with argument 'no-seccomp'."},
		{"forbids, flag first", []string{"--exec-file", "foo", "--no-seccomp", "--seccomp-filter", "0"},
			ForbiddenArgument, "Argument 'seccomp-filter' cannot be used together with argument 'no-seccomp'."},
		// Relations are checked in name order: "exec-file" < "no-api".
		{"required reported before requires", []string{"--no-api"},
			MissingArgument, "Argument 'exec-file' required, but not found."},
		{"requires reported before forbids", []string{"--exec-file", "f", "--no-api", "--no-seccomp", "--seccomp-filter", "x"},
			MissingArgument, "Argument 'config-file' required, but not found."},
		// A word after "--" does not satisfy a requirement.
		{"requires ignores extra args", []string{"--exec-file", "f", "--no-api", "--", "--config-file", "c"},
			MissingArgument, "Argument 'config-file' required, but not found."},
		{"help after separator is extra", []string{"--", "--help"},
			MissingArgument, "Argument 'exec-file' required, but not found."},
	}
	p := testParser()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := p.Parse(tt.argv)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error", tt.argv, args)
			}
			if args != nil {
				t.Errorf("Parse(%q) returned Args with an error", tt.argv)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *ParseError", err)
			}
			if pe.Kind != tt.kind || err.Error() != tt.text {
				t.Errorf("Parse(%q) error = %v %q, want %v %q", tt.argv, pe.Kind, err, tt.kind, tt.text)
			}
		})
	}
}

func TestErrorTexts(t *testing.T) {
	tests := []struct {
		err         *ParseError
		text, debug string
	}{
		{&ParseError{Kind: ForbiddenArgument, Arg: "foo", Other: "bar"},
			"Argument 'bar' cannot be used together with argument 'foo'.", `ForbiddenArgument("foo", "bar")`},
		{&ParseError{Kind: MissingArgument, Arg: "foo"},
			"Argument 'foo' required, but not found.", `MissingArgument("foo")`},
		{&ParseError{Kind: MissingValue, Arg: "foo"},
			"The argument 'foo' requires a value, but none was supplied.", `MissingValue("foo")`},
		{&ParseError{Kind: UnexpectedArgument, Arg: "foo"},
			"Found argument 'foo' which wasn't expected, or isn't valid in this context.", `UnexpectedArgument("foo")`},
		{&ParseError{Kind: DuplicateArgument, Arg: "foo"},
			"The argument 'foo' was provided more than once.", `DuplicateArgument("foo")`},
		{&ParseError{Kind: UnexpectedArgument, Arg: "a\"b\\c\n\t\r\x00'é\u0301\u200b"},
			"Found argument 'a\"b\\c\n\t\r\x00'é\u0301\u200b' which wasn't expected, or isn't valid in this context.",
			`UnexpectedArgument("a\"b\\c\n\t\r\0'é\u{301}\u{200b}")`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.text {
			t.Errorf("Error() = %q, want %q", got, tt.text)
		}
		if got := tt.err.Debug(); got != tt.debug {
			t.Errorf("Debug() = %q, want %q", got, tt.debug)
		}
	}
	if got := ErrorKind(0).String(); got != "ErrorKind(0)" {
		t.Errorf("ErrorKind(0).String() = %q", got)
	}
}

func TestShortCircuit(t *testing.T) {
	tests := []struct {
		name          string
		argv          []string
		help, version bool
		extra         []string
	}{
		{"help", []string{"--exec-file", "foo", "--help"}, true, false, nil},
		{"short help", []string{"--exec-file", "foo", "-h"}, true, false, nil},
		{"version", []string{"--exec-file", "foo", "--version"}, false, true, nil},
		{"help skips required", []string{"--help"}, true, false, nil},
		{"help skips unknown", []string{"--bogus", "x=y", "--help"}, true, false, nil},
		{"help skips duplicate", []string{"--id", "a", "--id", "b", "-h"}, true, false, nil},
		{"help in value position", []string{"--exec-file", "--help"}, true, false, nil},
		{"short help as value", []string{"--exec-file", "-h"}, true, false, nil},
		{"help beats version", []string{"--version", "--help"}, true, false, nil},
		{"version skips forbids", []string{"--no-seccomp", "--seccomp-filter", "x", "--version"}, false, true, nil},
		{"extra kept", []string{"--help", "--", "a", "--help"}, true, false, []string{"a", "--help"}},
		{"version before separator", []string{"--version", "--", "--bogus"}, false, true, []string{"--bogus"}},
	}
	p := testParser()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := p.Parse(tt.argv)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.argv, err)
			}
			if a.HelpRequested() != tt.help || a.Flag("help") != tt.help {
				t.Errorf("help = %v/%v, want %v", a.HelpRequested(), a.Flag("help"), tt.help)
			}
			if a.VersionRequested() != tt.version || a.Flag("version") != tt.version {
				t.Errorf("version = %v/%v, want %v", a.VersionRequested(), a.Flag("version"), tt.version)
			}
			if !slices.Equal(a.Extra(), tt.extra) {
				t.Errorf("Extra() = %q, want %q", a.Extra(), tt.extra)
			}
			// Nothing else was parsed: only defaults are visible.
			if v, ok := a.Value("id"); !ok || v != "instance" {
				t.Errorf(`Value("id") = %q, %v; want default`, v, ok)
			}
			if _, ok := a.Value("exec-file"); ok {
				t.Errorf(`Value("exec-file") set after short-circuit`)
			}
		})
	}
}

// A declared "version" or "help" argument is replaced on short-circuit, as
// Firecracker replaces it in its argument map.
func TestShortCircuitShadowsDeclared(t *testing.T) {
	p := NewParser(
		Arg{Name: "version", Help: "Print the binary version number."},
		Arg{Name: "help", TakesValue: true, Default: "d", HasDefault: true},
	)
	a, err := p.Parse([]string{"--version"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Flag("version") || !a.VersionRequested() {
		t.Error("version not reported")
	}
	if v, ok := a.Value("help"); !ok || v != "d" {
		t.Errorf(`Value("help") = %q, %v`, v, ok)
	}
	a, err = p.Parse([]string{"--help"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Value("help"); ok || !a.Flag("help") {
		t.Error("declared help default still visible after --help")
	}
	// Without a short-circuit a declared "version" flag is just a flag.
	if _, err := NewParser(Arg{Name: "version"}).Parse(nil); err != nil {
		t.Fatal(err)
	}
}

func TestParseValues(t *testing.T) {
	p := testParser()
	argv := []string{
		"--exec-file", "", "--id", "-x", "--cgroup", "a=1", "--no-seccomp",
		"--cgroup", "b", "--config-file", "c", "--no-api", "--", "--extra-flag", "--", "x",
	}
	a, err := p.Parse(argv)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		val  string
		ok   bool
	}{
		{"exec-file", "", true},      // empty values are fine
		{"id", "-x", true},           // one dash is a value
		{"api-sock", "socket", true}, // default
		{"config-file", "c", true},   // given
		{"describe-snapshot", "", false},
		{"no-seccomp", "", false}, // flags have no value
		{"cgroup", "", false},     // repeated values are not single
		{"unknown", "", false},
	}
	for _, c := range checks {
		if v, ok := a.Value(c.name); v != c.val || ok != c.ok {
			t.Errorf("Value(%q) = %q, %v; want %q, %v", c.name, v, ok, c.val, c.ok)
		}
	}
	if got := a.Values("cgroup"); !slices.Equal(got, []string{"a=1", "b"}) {
		t.Errorf(`Values("cgroup") = %q`, got)
	}
	for _, name := range []string{"id", "api-sock", "no-seccomp", "unknown"} {
		if got := a.Values(name); got != nil {
			t.Errorf("Values(%q) = %q, want nil", name, got)
		}
	}
	for name, want := range map[string]bool{"no-seccomp": true, "no-api": true, "id": false, "cgroup": false, "help": false, "version": false, "unknown": false} {
		if got := a.Flag(name); got != want {
			t.Errorf("Flag(%q) = %v, want %v", name, got, want)
		}
	}
	if got := a.Extra(); !slices.Equal(got, []string{"--extra-flag", "--", "x"}) {
		t.Errorf("Extra() = %q", got)
	}
	if a.HelpRequested() || a.VersionRequested() {
		t.Error("help or version reported")
	}
	// Results are copies.
	a.Values("cgroup")[0] = "changed"
	a.Extra()[0] = "changed"
	if a.Values("cgroup")[0] != "a=1" || a.Extra()[0] != "--extra-flag" {
		t.Error("accessors expose internal slices")
	}
	argv[1] = "changed"
	if v, _ := a.Value("exec-file"); v != "" {
		t.Error("Args aliases argv")
	}
}

func TestAllowMultiple(t *testing.T) {
	p := NewParser(
		Arg{Name: "no-multiple", TakesValue: true, Help: "argument that takes just one value."},
		Arg{Name: "multiple", AllowMultiple: true, Help: "argument that allows duplication."},
		Arg{Name: "defaulted", AllowMultiple: true, Default: "d", HasDefault: true},
	)
	if _, err := p.Parse([]string{"--no-multiple", "1", "--no-multiple", "2"}); err == nil ||
		err.Error() != "The argument 'no-multiple' was provided more than once." {
		t.Errorf("duplicate single: %v", err)
	}
	a, err := p.Parse([]string{"--no-multiple", "1", "--multiple", "2"})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Value("no-multiple"); v != "1" || !slices.Equal(a.Values("multiple"), []string{"2"}) {
		t.Errorf("got %q and %q", v, a.Values("multiple"))
	}
	a, err = p.Parse([]string{"--multiple", "1", "--multiple", "2", "--multiple", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Values("multiple"); !slices.Equal(got, []string{"1", "2", "1"}) {
		t.Errorf("Values = %q", got)
	}
	// A default of a repeatable argument is a single value, as in Firecracker.
	if v, ok := a.Value("defaulted"); v != "d" || !ok || a.Values("defaulted") != nil {
		t.Errorf("defaulted: %q %v %q", v, ok, a.Values("defaulted"))
	}
	if _, err := p.Parse([]string{"--multiple", "--multiple", "2"}); err == nil ||
		err.Error() != "The argument 'multiple' requires a value, but none was supplied." {
		t.Errorf("multiple without value: %v", err)
	}
}

func TestRelationsSatisfied(t *testing.T) {
	p := testParser()
	for _, argv := range [][]string{
		{"--exec-file", "f", "--no-api", "--config-file", "c"},
		{"--config-file", "c", "--exec-file", "f", "--no-api"},
		{"--exec-file", "f", "--seccomp-filter", "0", "--", "--no-seccomp"},
		{"--exec-file", "f", "--no-seccomp", "--", "--seccomp-filter"},
	} {
		if _, err := p.Parse(argv); err != nil {
			t.Errorf("Parse(%q): %v", argv, err)
		}
	}
	// No arguments at all is valid when nothing is required.
	a, err := NewParser(Arg{Name: "api-sock", TakesValue: true}).Parse(nil)
	if err != nil || len(a.Extra()) != 0 {
		t.Errorf("empty argv: %v %q", err, a.Extra())
	}
}

func TestLaterArgReplacesEarlier(t *testing.T) {
	p := NewParser(Arg{Name: "x", TakesValue: true}, Arg{Name: "x"})
	a, err := p.Parse([]string{"--x"})
	if err != nil || !a.Flag("x") {
		t.Errorf("x should be a flag: %v", err)
	}
}

func TestFormatHelpLine(t *testing.T) {
	tests := []struct {
		arg   Arg
		width int
		want  string
	}{
		{Arg{Name: "exec-file"}, 32, "  --exec-file                      "},
		{Arg{Name: "exec-file"}, 16, "  --exec-file      "},
		{Arg{Name: "exec-file", TakesValue: true}, 32, "  --exec-file <exec-file>          "},
		{Arg{Name: "exec-file", TakesValue: true}, 16, "  --exec-file <exec-file>   "},
		{Arg{Name: "exec-file", TakesValue: true, Help: "'exec-file' info."}, 32,
			"  --exec-file <exec-file>          'exec-file' info."},
		{Arg{Name: "exec-file", TakesValue: true, Help: "'exec-file' info."}, 16,
			"  --exec-file <exec-file>   'exec-file' info."},
		{Arg{Name: "exec-file", TakesValue: true, Default: "./exec-file", HasDefault: true}, 32,
			`  --exec-file <exec-file>          [default: "./exec-file"]`},
		{Arg{Name: "exec-file", TakesValue: true, Default: "./exec-file", HasDefault: true}, 16,
			`  --exec-file <exec-file>   [default: "./exec-file"]`},
		{Arg{Name: "exec-file", TakesValue: true, Default: "./exec-file", HasDefault: true, Help: "'exec-file' info."}, 32,
			`  --exec-file <exec-file>          'exec-file' info. [default: "./exec-file"]`},
		{Arg{Name: "exec-file", TakesValue: true, Default: "./exec-file", HasDefault: true, Help: "'exec-file' info."}, 16,
			`  --exec-file <exec-file>   'exec-file' info. [default: "./exec-file"]`},
		{Arg{Name: "e", TakesValue: true, HasDefault: true}, 0, `  --e <e>   [default: ""]`},
		{Arg{Name: "cgroup", AllowMultiple: true}, 0, "  --cgroup <cgroup>   "},
		// Width counts bytes, padding counts characters.
		{Arg{Name: "é"}, 6, "  --é   " + " "},
	}
	for _, tt := range tests {
		if got := tt.arg.formatHelp(tt.width); got != tt.want {
			t.Errorf("formatHelp(%+v, %d) = %q, want %q", tt.arg, tt.width, got, tt.want)
		}
	}
}

func TestFormattedHelp(t *testing.T) {
	p := NewParser(
		Arg{Name: "exec-file", Required: true, TakesValue: true, Help: "'exec-file' info."},
		Arg{Name: "api-sock", TakesValue: true, Help: "'api-sock' info."},
	)
	want := "required arguments:\n  --exec-file <exec-file>   'exec-file' info.\n\n" +
		"optional arguments:\n  --api-sock <api-sock>   'api-sock' info."
	if got := p.formattedHelp(false); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	want = "required arguments:\n  --exec-file <exec-file>   'exec-file' info.\n\n" +
		"optional arguments:\n  --api-sock <api-sock>   'api-sock' info.\n  --help                  Show the help message."
	if got := p.FormattedHelp(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	p = NewParser(
		Arg{Name: "id", TakesValue: true, Help: "'id' info."},
		Arg{Name: "seccomp-filter", TakesValue: true, Help: "'seccomp-filter' info."},
		Arg{Name: "config-file", TakesValue: true, Help: "'config-file' info."},
	)
	want = "optional arguments:\n  --config-file <config-file>         'config-file' info.\n" +
		"  --id <id>                           'id' info.\n" +
		"  --seccomp-filter <seccomp-filter>   'seccomp-filter' info."
	if got := p.formattedHelp(false); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	want = "optional arguments:\n  --config-file <config-file>         'config-file' info.\n" +
		"  --help                              Show the help message.\n" +
		"  --id <id>                           'id' info.\n" +
		"  --seccomp-filter <seccomp-filter>   'seccomp-filter' info."
	if got := p.FormattedHelp(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	// Only required arguments, and the --help entry alone.
	p = NewParser(Arg{Name: "id", Required: true})
	if got, want := p.formattedHelp(false), "required arguments:\n  --id   "; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := NewParser().FormattedHelp(), "optional arguments:\n  --help   Show the help message."; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := NewParser().formattedHelp(false); got != "" {
		t.Errorf("empty parser help = %q", got)
	}
	// A declared help argument is replaced, as after Firecracker's parse.
	p = NewParser(Arg{Name: "help", Required: true, TakesValue: true})
	if got, want := p.FormattedHelp(), "optional arguments:\n  --help   Show the help message."; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestFirecrackerHelp checks the layout of a real-size list: byte-order
// sorting ("http-..." before "id", "metadata" before "metrics-path") and the
// width taken from the longest "--name <name>".
func TestFirecrackerHelp(t *testing.T) {
	p := NewParser(
		Arg{Name: "api-sock", TakesValue: true, Default: "/run/firecracker.socket", HasDefault: true, Help: "Path to unix domain socket used by the API."},
		Arg{Name: "id", TakesValue: true, Default: "anonymous-instance", HasDefault: true, Help: "MicroVM unique identifier."},
		Arg{Name: "no-api", Requires: "config-file", Help: "Optional parameter which allows starting and using a microVM without an active API socket."},
		Arg{Name: "http-api-max-payload-size", TakesValue: true, Default: "51200", HasDefault: true, Help: "Http API request payload max size, in bytes."},
		Arg{Name: "version", Help: "Print the binary version number."},
	)
	want := strings.Join([]string{
		"optional arguments:",
		`  --api-sock <api-sock>                                     Path to unix domain socket used by the API. [default: "/run/firecracker.socket"]`,
		"  --help                                                    Show the help message.",
		`  --http-api-max-payload-size <http-api-max-payload-size>   Http API request payload max size, in bytes. [default: "51200"]`,
		`  --id <id>                                                 MicroVM unique identifier. [default: "anonymous-instance"]`,
		"  --no-api                                                  Optional parameter which allows starting and using a microVM without an active API socket.",
		"  --version                                                 Print the binary version number.",
	}, "\n")
	if got := p.FormattedHelp(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// NewParser copies its input, so later edits by the caller change nothing.
func TestParserCopiesArgs(t *testing.T) {
	args := []Arg{{Name: "a", Forbids: []string{"b"}}, {Name: "b"}}
	p := NewParser(args...)
	args[0].Forbids[0] = "c"
	args[0].Name = "z"
	if _, err := p.Parse([]string{"--a", "--b"}); err == nil ||
		err.Error() != "Argument 'b' cannot be used together with argument 'a'." {
		t.Errorf("got %v", err)
	}
}

package cli

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tokens with a fixed meaning, as in Firecracker.
const (
	argPrefix    = "--"
	argSeparator = "--"
	helpArg      = "--help"
	shortHelpArg = "-h"
	versionArg   = "--version"
)

// Names and help text of the arguments that Firecracker's parser adds by
// itself when --help/-h or --version short-circuits parsing.
const (
	helpName    = "help"
	helpText    = "Show the help message."
	versionName = "version"
)

// Arg describes one accepted command-line argument, "--Name".
// The zero value besides Name is an optional flag without help text.
type Arg struct {
	// Name is the argument without its leading "--".
	Name string
	// Help is shown after the name by FormattedHelp; empty means none.
	Help string
	// TakesValue makes the argument consume the next word as its value;
	// otherwise it is a flag.
	TakesValue bool
	// AllowMultiple lets the argument repeat, collecting every value.
	// It implies TakesValue, as in Firecracker.
	AllowMultiple bool
	// Default is the value reported by Args.Value when the argument is
	// absent. It only counts when HasDefault is set, so that an empty
	// default can be told from no default.
	Default string
	// HasDefault says whether Default is set.
	HasDefault bool
	// Required makes the argument's absence an error.
	Required bool
	// Requires names another argument that must be given with this one.
	Requires string
	// Forbids names arguments that must not be given with this one.
	Forbids []string
}

func (a *Arg) takesValue() bool { return a.TakesValue || a.AllowMultiple }

// formatName is the left column of the help text.
func (a *Arg) formatName() string {
	if a.takesValue() {
		return "  --" + a.Name + " <" + a.Name + ">"
	}
	return "  --" + a.Name
}

// formatHelp renders one help line with the name padded to width.
// Width is in bytes while padding counts characters; Firecracker does the
// same, which only matters for non-ASCII names.
func (a *Arg) formatHelp(width int) string {
	var b strings.Builder
	name := a.formatName()
	b.WriteString(name)
	if n := utf8.RuneCountInString(name); n < width {
		b.WriteString(strings.Repeat(" ", width-n))
	}
	b.WriteString("   ")
	def := ""
	if a.HasDefault {
		def = `[default: "` + a.Default + `"]`
	}
	switch {
	case a.Help != "" && def != "":
		b.WriteString(a.Help + " " + def)
	case a.Help != "":
		b.WriteString(a.Help)
	default:
		b.WriteString(def)
	}
	return b.String()
}

// Parser holds the accepted arguments. It is not changed by Parse, so one
// Parser may parse many command lines, also concurrently.
type Parser struct {
	args  map[string]Arg
	names []string // sorted; the order of checks and of help lines
}

// NewParser returns a parser accepting args. An Arg whose Name repeats an
// earlier one replaces it, as in Firecracker.
func NewParser(args ...Arg) *Parser {
	p := &Parser{args: make(map[string]Arg, len(args))}
	for _, a := range args {
		a.Forbids = slices.Clone(a.Forbids)
		p.args[a.Name] = a
	}
	for name := range p.args {
		p.names = append(p.names, name)
	}
	sort.Strings(p.names)
	return p
}

// FormattedHelp returns the argument list that Firecracker prints for
// --help: a "required arguments:" section, if any, then a blank line and an
// "optional arguments:" section, each sorted by name and aligned. It lists
// "--help" too, because Firecracker prints its help after the parser has
// added that argument. There is no trailing newline.
func (p *Parser) FormattedHelp() string {
	return p.formattedHelp(true)
}

// formattedHelp renders the help; withHelp adds the --help entry.
func (p *Parser) formattedHelp(withHelp bool) string {
	args := make([]Arg, 0, len(p.names)+1)
	for _, name := range p.names {
		if withHelp && name == helpName {
			continue
		}
		args = append(args, p.args[name])
	}
	if withHelp {
		args = append(args, Arg{Name: helpName, Help: helpText})
		sort.SliceStable(args, func(i, j int) bool { return args[i].Name < args[j].Name })
	}
	var parts []string
	if s := formatArgs(args, true); s != "" {
		parts = append(parts, "required arguments:", s)
	}
	if s := formatArgs(args, false); s != "" {
		if len(parts) > 0 {
			parts = append(parts, "")
		}
		parts = append(parts, "optional arguments:", s)
	}
	return strings.Join(parts, "\n")
}

// formatArgs renders the lines of the arguments whose Required equals
// required, aligned on the longest name among them.
func formatArgs(args []Arg, required bool) string {
	var sel []*Arg
	width := 0
	for i := range args {
		if args[i].Required == required {
			sel = append(sel, &args[i])
			width = max(width, len(args[i].formatName()))
		}
	}
	lines := make([]string, len(sel))
	for i, a := range sel {
		lines[i] = a.formatHelp(width)
	}
	return strings.Join(lines, "\n")
}

// Parse reads argv, which must not include the program name. On success the
// result also reports --help and --version, which the caller must check
// first; every error is a *ParseError.
func (p *Parser) Parse(argv []string) (*Args, error) {
	opts, extra := argv, []string(nil)
	if i := slices.Index(argv, argSeparator); i >= 0 {
		opts, extra = argv[:i], argv[i+1:]
	}
	res := &Args{parser: p, values: map[string]value{}, extra: slices.Clone(extra)}

	// Help beats version, and both beat every error, wherever they appear.
	if slices.Contains(opts, helpArg) || slices.Contains(opts, shortHelpArg) {
		res.values[helpName] = value{kind: kindFlag}
		res.shadowed = helpName
		return res, nil
	}
	if slices.Contains(opts, versionArg) {
		res.values[versionName] = value{kind: kindFlag}
		res.shadowed = versionName
		return res, nil
	}

	for i := 0; i < len(opts); i++ {
		name, ok := strings.CutPrefix(opts[i], argPrefix)
		if !ok {
			return nil, &ParseError{Kind: UnexpectedArgument, Arg: opts[i]}
		}
		arg, ok := p.args[name]
		if !ok {
			return nil, &ParseError{Kind: UnexpectedArgument, Arg: name}
		}
		cur, seen := res.values[name]
		if seen && !arg.AllowMultiple {
			return nil, &ParseError{Kind: DuplicateArgument, Arg: name}
		}
		if !arg.takesValue() {
			res.values[name] = value{kind: kindFlag}
			continue
		}
		i++
		if i >= len(opts) || strings.HasPrefix(opts[i], argPrefix) {
			return nil, &ParseError{Kind: MissingValue, Arg: name}
		}
		if arg.AllowMultiple {
			cur.kind = kindMultiple
			cur.s = append(cur.s, opts[i])
			res.values[name] = cur
		} else {
			res.values[name] = value{kind: kindSingle, s: []string{opts[i]}}
		}
	}

	if err := p.checkRelations(res, opts); err != nil {
		return nil, err
	}
	return res, nil
}

// checkRelations applies the required, requires and forbids rules in name
// order, returning the first broken one. Like Firecracker, requires and
// forbids look for the literal "--name" among the options.
func (p *Parser) checkRelations(res *Args, opts []string) error {
	for _, name := range p.names {
		arg := p.args[name]
		_, given := res.values[name]
		if arg.Required && !given {
			return &ParseError{Kind: MissingArgument, Arg: name}
		}
		if !given {
			continue
		}
		if arg.Requires != "" && !slices.Contains(opts, argPrefix+arg.Requires) {
			return &ParseError{Kind: MissingArgument, Arg: arg.Requires}
		}
		for _, f := range arg.Forbids {
			if slices.Contains(opts, argPrefix+f) {
				return &ParseError{Kind: ForbiddenArgument, Arg: name, Other: f}
			}
		}
	}
	return nil
}

// valueKind tells flags, single values and repeated values apart, because
// the accessors answer only for the kind they ask about.
type valueKind int

const (
	kindFlag valueKind = iota + 1
	kindSingle
	kindMultiple
)

type value struct {
	kind valueKind
	s    []string
}

// Args is the result of a successful Parse.
type Args struct {
	parser *Parser
	values map[string]value // only what the user gave
	// shadowed is "help" or "version" after a short-circuit: Firecracker
	// then replaces that declared argument, default included.
	shadowed string
	extra    []string
}

// lookup returns the user's value, else the declared default.
func (a *Args) lookup(name string) (value, bool) {
	if v, ok := a.values[name]; ok {
		return v, true
	}
	if name == a.shadowed {
		return value{}, false
	}
	if arg, ok := a.parser.args[name]; ok && arg.HasDefault {
		return value{kind: kindSingle, s: []string{arg.Default}}, true
	}
	return value{}, false
}

// Value returns the single value of name, or its default when it was not
// given. It reports false for flags and for AllowMultiple arguments that
// were given, as Firecracker's single_value does.
func (a *Args) Value(name string) (string, bool) {
	if v, ok := a.lookup(name); ok && v.kind == kindSingle {
		return v.s[0], true
	}
	return "", false
}

// Values returns every value given for an AllowMultiple argument, in
// command-line order, or nil when it was not given (defaults do not count).
func (a *Args) Values(name string) []string {
	if v, ok := a.lookup(name); ok && v.kind == kindMultiple {
		return slices.Clone(v.s)
	}
	return nil
}

// Flag reports whether the flag name was given. Flag("help") and
// Flag("version") mirror HelpRequested and VersionRequested.
func (a *Args) Flag(name string) bool {
	v, ok := a.lookup(name)
	return ok && v.kind == kindFlag
}

// Extra returns the words after the first "--", unparsed.
func (a *Args) Extra() []string { return slices.Clone(a.extra) }

// HelpRequested reports --help or -h; nothing else was then checked.
func (a *Args) HelpRequested() bool { return a.shadowed == helpName }

// VersionRequested reports --version (without a help request); nothing else
// was then checked.
func (a *Args) VersionRequested() bool { return a.shadowed == versionName }

// ErrorKind classifies a ParseError; the names are Firecracker's.
type ErrorKind int

// The kinds of ParseError, one per Firecracker error variant.
const (
	// ForbiddenArgument: Arg was given together with Other, which it forbids.
	ForbiddenArgument ErrorKind = iota + 1
	// MissingArgument: Arg is required, or required by another argument.
	MissingArgument
	// MissingValue: Arg takes a value but was last or followed by "--...".
	MissingValue
	// UnexpectedArgument: Arg is not accepted (unknown, or not "--name").
	UnexpectedArgument
	// DuplicateArgument: Arg was given twice without AllowMultiple.
	DuplicateArgument
)

var kindNames = [...]string{
	ForbiddenArgument:  "ForbiddenArgument",
	MissingArgument:    "MissingArgument",
	MissingValue:       "MissingValue",
	UnexpectedArgument: "UnexpectedArgument",
	DuplicateArgument:  "DuplicateArgument",
}

// String returns Firecracker's name for the kind.
func (k ErrorKind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// ParseError is a command line that breaks a rule. Its Error text is
// Firecracker's, word for word, because users and tests compare them.
type ParseError struct {
	Kind ErrorKind
	// Arg is the offending argument: the name without "--" when the word
	// started with "--", else the whole word.
	Arg string
	// Other is the forbidden argument for ForbiddenArgument, else empty.
	Other string
}

// Error returns Firecracker's message for the error.
func (e *ParseError) Error() string {
	switch e.Kind {
	case ForbiddenArgument:
		return "Argument '" + e.Other + "' cannot be used together with argument '" + e.Arg + "'."
	case MissingArgument:
		return "Argument '" + e.Arg + "' required, but not found."
	case MissingValue:
		return "The argument '" + e.Arg + "' requires a value, but none was supplied."
	case UnexpectedArgument:
		return "Found argument '" + e.Arg + "' which wasn't expected, or isn't valid in this context."
	case DuplicateArgument:
		return "The argument '" + e.Arg + "' was provided more than once."
	}
	return "invalid argument '" + e.Arg + "'."
}

// Debug returns the error as Rust's Debug formatting shows it, for example
// MissingValue("id"), because firecracker prints that form on stderr
// ("Error: ParseArguments(MissingValue(\"id\"))").
func (e *ParseError) Debug() string {
	if e.Kind == ForbiddenArgument {
		return e.Kind.String() + "(" + rustQuote(e.Arg) + ", " + rustQuote(e.Other) + ")"
	}
	return e.Kind.String() + "(" + rustQuote(e.Arg) + ")"
}

// rustQuote approximates Rust's Debug for str: double quotes, escapes for
// quote, backslash, NUL, tab, CR, LF, and \u{..} for characters that are not
// printable or that extend a grapheme. Invalid UTF-8 bytes, which Rust could
// not hold in a String, come out as U+FFFD.
func rustQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case 0:
			b.WriteString(`\0`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case '\n':
			b.WriteString(`\n`)
		default:
			if !unicode.IsPrint(r) || unicode.In(r, unicode.Mn, unicode.Me, unicode.Other_Grapheme_Extend) {
				fmt.Fprintf(&b, `\u{%x}`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

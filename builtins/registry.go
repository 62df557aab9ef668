package builtins

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Phase is the SMTP phase at which a fact becomes known. Rules run at the
// earliest phase at which every fact they read is known.
type Phase uint8

// The SMTP phases, in the order a session goes through them.
const (
	Connect Phase = iota
	Helo
	Mail
	Rcpt
	Data
)

// NumPhases is the number of phases.
const NumPhases = 5

var phaseNames = [NumPhases]string{"connect", "helo", "mail", "rcpt", "data"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", p)
}

// ParsePhase reads a phase name as printed by String.
func ParsePhase(s string) (Phase, bool) {
	for i, n := range phaseNames {
		if n == s {
			return Phase(i), true
		}
	}
	return 0, false
}

// Type is the type of a fact's value as rules see it.
type Type uint8

// Fact types.
const (
	Bool Type = iota
	Int
	Float
	String
	StringList
	// AttachmentList and PartList are lists of records (Attachment, Part)
	// that rules filter with expr's predicates, reading fields by their
	// expr names: any(attachments, .size > 5e6).
	AttachmentList
	PartList
)

func (t Type) String() string {
	switch t {
	case Bool:
		return "bool"
	case Int:
		return "int"
	case Float:
		return "float"
	case String:
		return "string"
	case StringList:
		return "[]string"
	case AttachmentList:
		return "[]attachment"
	case PartList:
		return "[]part"
	}
	return fmt.Sprintf("type(%d)", t)
}

// GoType is the Go type of a value of this type.
func (t Type) GoType() reflect.Type {
	switch t {
	case Bool:
		return reflect.TypeFor[bool]()
	case Int:
		return reflect.TypeFor[int]()
	case Float:
		return reflect.TypeFor[float64]()
	case String:
		return reflect.TypeFor[string]()
	case AttachmentList:
		return reflect.TypeFor[[]Attachment]()
	case PartList:
		return reflect.TypeFor[[]Part]()
	default:
		return reflect.TypeFor[[]string]()
	}
}

// Types lists every fact type.
var Types = []Type{Bool, Int, Float, String, StringList, AttachmentList, PartList}

// Field is one field of a record type, as rules name it.
type Field struct {
	Name string // the expr name: .size
	Type Type   // Bool, Int, Float or String
	Doc  string
}

// Record is the name of the records a list type holds ("attachment"), ""
// for a type that is not a list of records.
func (t Type) Record() string {
	if t == AttachmentList || t == PartList {
		return strings.TrimPrefix(t.String(), "[]")
	}
	return ""
}

// Fields lists the fields of the records of t, nil for a type that is not
// a list of records.
func (t Type) Fields() []Field {
	if t.Record() == "" {
		return nil
	}
	st := t.GoType().Elem()
	out := make([]Field, 0, st.NumField())
	for i := range st.NumField() {
		sf := st.Field(i)
		f := Field{Name: sf.Tag.Get("expr"), Doc: sf.Tag.Get("doc")}
		switch sf.Type.Kind() {
		case reflect.Bool:
			f.Type = Bool
		case reflect.Int:
			f.Type = Int
		case reflect.Float64:
			f.Type = Float
		default:
			f.Type = String
		}
		out = append(out, f)
	}
	return out
}

// convertRecords reads a list of records given from outside (a fixture's
// YAML: a list of maps keyed by field name) into a []Attachment or []Part;
// fields not given are zero.
func (t Type) convertRecords(v any) (any, error) {
	out := reflect.MakeSlice(t.GoType(), 0, 0)
	if v == nil {
		return out.Interface(), nil
	}
	if reflect.TypeOf(v) == t.GoType() {
		return v, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of %s records ({%s: ...}), got %v (%T)", t.Record(), t.Fields()[0].Name, v, v)
	}
	fields := t.Fields()
	for i, e := range l {
		rec, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("element %d: want a %s record ({%s: ...}), got %v (%T)", i+1, t.Record(), fields[0].Name, e, e)
		}
		r := reflect.New(t.GoType().Elem()).Elem()
		keys := make([]string, 0, len(rec))
		for k := range rec {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			j := slices.IndexFunc(fields, func(f Field) bool { return f.Name == k })
			if j < 0 {
				names := make([]string, len(fields))
				for n, f := range fields {
					names[n] = f.Name
				}
				return nil, fmt.Errorf("element %d: a %s has no field %q (it has %s)", i+1, t.Record(), k, strings.Join(names, ", "))
			}
			fv, err := fields[j].Type.Convert(rec[k])
			if err != nil {
				return nil, fmt.Errorf("element %d: %s: %v", i+1, k, err)
			}
			r.Field(j).Set(reflect.ValueOf(fv))
		}
		out = reflect.Append(out, r)
	}
	return out.Interface(), nil
}

// Convert turns a value given from outside (a fixture's YAML, a JSON context)
// into the Go type the fact holds, or says why it cannot.
func (t Type) Convert(v any) (any, error) {
	switch t {
	case AttachmentList, PartList:
		return t.convertRecords(v)
	case Bool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case Int:
		switch n := v.(type) {
		case int:
			return n, nil
		case int64:
			return int(n), nil
		case uint64:
			return int(n), nil
		case float64:
			if n == float64(int(n)) {
				return int(n), nil
			}
		}
	case Float:
		switch n := v.(type) {
		case int:
			return float64(n), nil
		case int64:
			return float64(n), nil
		case float64:
			return n, nil
		}
	case String:
		switch s := v.(type) {
		case string:
			return s, nil
		case nil:
			return "", nil
		}
	case StringList:
		switch l := v.(type) {
		case []string:
			return l, nil
		case nil:
			return []string{}, nil
		case string:
			return []string{l}, nil
		case []any:
			out := make([]string, 0, len(l))
			for _, e := range l {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("want a list of strings, got an element %v (%T)", e, e)
				}
				out = append(out, s)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("want %s, got %v (%T)", t, v, v)
}

// Fact is one named value rules can read.
type Fact struct {
	Name  string
	Type  Type
	Phase Phase
	Doc   string
	// PerRecipient facts change with the recipient under consideration; a
	// rule that reads one runs once per recipient.
	PerRecipient bool
	// Compute returns the fact's value for m, of the Go type matching Type.
	// It runs at most once per message (once per recipient for PerRecipient
	// facts) and only when an evaluated rule reads the fact. An error makes
	// the rule that read it fail, which the engine turns into a temporary
	// failure rather than a guess.
	Compute func(m *Message) (any, error)
	// Detail, when set, names and gives a value that explains the fact's
	// own (the tokens behind spam_probability): a rule that read the fact
	// shows it as evidence when it fires. "" names nothing to add.
	Detail func(m *Message) (name string, value any)

	id int
}

// ID is the fact's index in its registry, stable for the registry's life.
func (f *Fact) ID() int { return f.id }

// Func is a function rules can call.
type Func struct {
	Name      string
	Signature string // as shown to operators, e.g. "header(name) string"
	Phase     Phase  // earliest phase at which it can run; arguments may push it later
	Doc       string
	Params    []Type
	Result    Type
	// Call runs the function for m; args hold one value of the Go type of
	// each of Params, and the result must be of the Go type of Result.
	Call func(m *Message, args []any) any
	// Prefetchable marks a lookup (a DNS query): equal calls are made once
	// per transaction, and the calls a phase's rules contain run side by side
	// at the first one a rule evaluates (Message.Prefetch), so their waits
	// overlap. Call then runs on goroutines of its own, concurrently with
	// other calls for the same m: it may read m's input and context, never
	// facts, and must not Fail. Params must be scalars (not StringList).
	Prefetchable bool
}

// Registry holds the facts and functions of one engine. It is filled at start
// and read-only afterwards, so it is safe to share between goroutines once
// rules have been compiled against it.
type Registry struct {
	facts  []*Fact
	byName map[string]*Fact
	funcs  map[string]*Func
}

// NewRegistry returns a registry holding the core facts and functions.
func NewRegistry() *Registry {
	r := &Registry{byName: map[string]*Fact{}, funcs: map[string]*Func{}}
	for _, f := range append(append(append(coreFacts(), authFacts()...), headerFacts()...), structFacts()...) {
		if err := r.Register(f); err != nil {
			panic(err) // the core table is static; a clash is a programming error caught by tests
		}
	}
	for _, f := range classifierFacts() {
		if err := r.Register(f); err != nil {
			panic(err)
		}
	}
	for _, f := range append(append(coreFuncs(), authFuncs()...), headerFuncs()...) {
		if err := r.RegisterFunc(f); err != nil {
			panic(err)
		}
	}
	return r
}

// Register adds a fact. Names are unique across facts and functions.
func (r *Registry) Register(f Fact) error {
	if f.Name == "" || f.Compute == nil {
		return fmt.Errorf("register fact %q: name and Compute are required", f.Name)
	}
	if _, ok := r.byName[f.Name]; ok {
		return fmt.Errorf("register fact %q: already registered", f.Name)
	}
	if _, ok := r.funcs[f.Name]; ok {
		return fmt.Errorf("register fact %q: a function has that name", f.Name)
	}
	nf := f
	nf.id = len(r.facts)
	r.facts = append(r.facts, &nf)
	r.byName[f.Name] = &nf
	return nil
}

// SetCompute replaces how an already declared fact is computed, keeping its
// name, type and phase: later subsystems (SPF, counters) plug in this way.
func (r *Registry) SetCompute(name string, compute func(m *Message) (any, error)) error {
	f, ok := r.byName[name]
	if !ok {
		return fmt.Errorf("set compute of %q: no such fact", name)
	}
	f.Compute = compute
	return nil
}

// RegisterFunc adds a function.
func (r *Registry) RegisterFunc(f Func) error {
	if f.Name == "" || f.Call == nil {
		return fmt.Errorf("register function %q: name and Call are required", f.Name)
	}
	if _, ok := r.funcs[f.Name]; ok {
		return fmt.Errorf("register function %q: already registered", f.Name)
	}
	if _, ok := r.byName[f.Name]; ok {
		return fmt.Errorf("register function %q: a fact has that name", f.Name)
	}
	if f.Prefetchable && slices.Contains(f.Params, StringList) {
		return fmt.Errorf("register function %q: a prefetchable function takes scalars only", f.Name)
	}
	nf := f
	r.funcs[f.Name] = &nf
	return nil
}

// Fact returns the fact with that name.
func (r *Registry) Fact(name string) (*Fact, bool) {
	f, ok := r.byName[name]
	return f, ok
}

// Func returns the function with that name.
func (r *Registry) Func(name string) (*Func, bool) {
	f, ok := r.funcs[name]
	return f, ok
}

// Facts returns every fact in registration order.
func (r *Registry) Facts() []*Fact { return r.facts }

// Funcs returns every function sorted by name.
func (r *Registry) Funcs() []*Func {
	out := make([]*Func, 0, len(r.funcs))
	for _, f := range r.funcs {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Doc renders the registry as a reference table for operators.
func (r *Registry) Doc() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s %-12s %-8s %s\n", "FACT", "TYPE", "PHASE", "MEANING")
	var records []Type
	for _, f := range r.facts {
		fmt.Fprintf(&b, "%-18s %-12s %-8s %s\n", f.Name, f.Type, f.Phase, f.Doc)
		if f.Type.Record() != "" && !slices.Contains(records, f.Type) {
			records = append(records, f.Type)
		}
	}
	if len(records) > 0 {
		b.WriteString("\nRECORD       FIELD          TYPE     MEANING\n")
		for _, t := range records {
			for _, f := range t.Fields() {
				fmt.Fprintf(&b, "%-12s .%-13s %-8s %s\n", t.Record(), f.Name, f.Type, f.Doc)
			}
		}
	}
	b.WriteString("\nFUNCTION                      PHASE    MEANING\n")
	for _, f := range r.Funcs() {
		fmt.Fprintf(&b, "%-29s %-8s %s\n", f.Signature, f.Phase, f.Doc)
	}
	return b.String()
}

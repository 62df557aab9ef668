package engine

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"

	"github.com/sluicemail/sluice/builtins"
)

// guard is a cheap native pre-check of a rule: the leftmost conjunct of its
// expression when that conjunct compares one fact, or one call of a
// registered function on constants and facts, with constants. Since `and`
// evaluates left to right and stops at the first false operand, a false
// guard means the expression is false without evaluating anything else, so
// skipping the rule changes nothing but the time spent: in large rule sets
// most rules are "this domain", "this user", "this keyword" and are decided
// here without entering the VM. When the guard is the whole expression
// (exact), a true guard also decides: the rule fired.
type guard struct {
	fact *builtins.Fact // the subject, when it is a fact
	call *gcall         // the subject, when it is a function call
	op   string
	strs []string  // constants for string subjects
	nums []float64 // constants for numeric subjects
	b    bool      // constant for bool subjects

	// all or any, when set, make the guard a conjunction or disjunction of
	// guards, evaluated left to right and stopping as expr does.
	all, any []*guard

	// exact: the guard is equivalent to the expression it was taken from,
	// not just implied by it.
	exact bool

	// matcher, when >= 0, answers a `contains` guard from the rule set's
	// shared multi-pattern matcher: pattern is this guard's index in it.
	matcher int
	pattern int
}

// gcall is a call of a registered function whose arguments are constants,
// facts or such calls, e.g. in_list("role_locals", local_part(rcpt)).
type gcall struct {
	fn   *builtins.Func
	args []garg
	id   int // equal calls share an id, and so a memo entry
}

type garg struct {
	lit  any
	fact *builtins.Fact
	call *gcall
}

// subjectName names the guard's subject, for tests and debugging.
func (g *guard) subjectName() string {
	if g.fact != nil {
		return g.fact.Name
	}
	return g.call.fn.Name + "()"
}

// guardResult is what a guard knows: the expression is false, the guard
// holds, or a fact failed to compute and only running the rule can say.
type guardResult int

const (
	guardFalse guardResult = iota
	guardTrue
	guardUnknown
)

// findGuard returns the guard of an expression (before fact names are
// rewritten), or nil.
func findGuard(n ast.Node, reg *builtins.Registry, lets map[string]bool) *guard {
	return guardOf(n, reg, lets)
}

func guardOf(n ast.Node, reg *builtins.Registry, lets map[string]bool) *guard {
	switch x := n.(type) {
	case *ast.BinaryNode:
		switch x.Operator {
		case "and", "&&":
			l := guardOf(x.Left, reg, lets)
			if l == nil {
				return nil
			}
			r := guardOf(x.Right, reg, lets)
			if r == nil {
				l.exact = false
				return l
			}
			return &guard{all: append(parts(l, true), parts(r, true)...), exact: l.exact && r.exact, matcher: -1}
		case "or", "||":
			// a == "x" or a == "y" on the same fact is a set.
			l, r := guardOf(x.Left, reg, lets), guardOf(x.Right, reg, lets)
			if l == nil || r == nil {
				return nil
			}
			if l.fact != nil && l.fact == r.fact && l.op == "==" && r.op == "==" && l.fact.Type == builtins.String && l.exact && r.exact {
				return &guard{fact: l.fact, op: "==", strs: append(append([]string{}, l.strs...), r.strs...), exact: true, matcher: -1}
			}
			return &guard{any: append(parts(l, false), parts(r, false)...), exact: l.exact && r.exact, matcher: -1}
		}
		g, lit, flipped := subjectAndLiteral(x.Left, x.Right, reg, lets)
		if g == nil {
			return nil
		}
		op := x.Operator
		if flipped {
			switch op {
			case "<":
				op = ">"
			case "<=":
				op = ">="
			case ">":
				op = "<"
			case ">=":
				op = "<="
			case "==", "!=":
			default:
				return nil // "x" contains subject is not a test of subject
			}
		}
		return makeGuard(g, op, lit)
	case *ast.UnaryNode:
		if x.Operator == "not" || x.Operator == "!" {
			if g, t := subjectOf(x.Node, reg, lets); g != nil && t == builtins.Bool {
				g.op, g.b = "==", false
				return g
			}
		}
	case *ast.IdentifierNode, *ast.CallNode:
		if g, t := subjectOf(x, reg, lets); g != nil && t == builtins.Bool {
			g.op, g.b = "==", true
			return g
		}
	}
	return nil
}

// parts flattens nested conjunctions (all) or disjunctions (any) into one
// list; an inexact part stays whole, since it stands for more than itself.
func parts(g *guard, all bool) []*guard {
	if all && g.all != nil && g.exact {
		return g.all
	}
	if !all && g.any != nil && g.exact {
		return g.any
	}
	return []*guard{g}
}

// leaves calls fn for every simple guard in g.
func (g *guard) leaves(fn func(*guard)) {
	for _, p := range g.all {
		p.leaves(fn)
	}
	for _, p := range g.any {
		p.leaves(fn)
	}
	if g.all == nil && g.any == nil {
		fn(g)
	}
}

// String shows the guard, for tests and debugging.
func (g *guard) String() string {
	var s string
	switch {
	case g.all != nil || g.any != nil:
		op, ps := "all", g.all
		if g.any != nil {
			op, ps = "any", g.any
		}
		var b strings.Builder
		b.WriteString(op + "(")
		for i, p := range ps {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(p.String())
		}
		s = b.String() + ")"
	case g.strs != nil:
		s = fmt.Sprintf("%s %s %v", g.subjectName(), g.op, g.strs)
	case g.nums != nil:
		s = fmt.Sprintf("%s %s %v", g.subjectName(), g.op, g.nums)
	default:
		s = fmt.Sprintf("%s %s %v", g.subjectName(), g.op, g.b)
	}
	if !g.exact {
		s += "…"
	}
	return s
}

func factNamed(id *ast.IdentifierNode, reg *builtins.Registry, lets map[string]bool) *builtins.Fact {
	if lets[id.Value] {
		return nil
	}
	f, _ := reg.Fact(id.Value)
	return f
}

// subjectOf returns a guard with its subject set when n is a fact or a call
// that can run natively, and the subject's type.
func subjectOf(n ast.Node, reg *builtins.Registry, lets map[string]bool) (*guard, builtins.Type) {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if f := factNamed(x, reg, lets); f != nil {
			return &guard{fact: f, exact: true, matcher: -1}, f.Type
		}
	case *ast.CallNode:
		if c := callOf(x, reg, lets); c != nil {
			return &guard{call: c, exact: true, matcher: -1}, c.fn.Result
		}
	}
	return nil, 0
}

// callOf compiles a call of a registered function whose arguments are all
// constants of the parameter's type, facts of it, or such calls.
func callOf(x *ast.CallNode, reg *builtins.Registry, lets map[string]bool) *gcall {
	id, ok := x.Callee.(*ast.IdentifierNode)
	if !ok || lets[id.Value] {
		return nil
	}
	fn, ok := reg.Func(id.Value)
	if !ok || len(x.Arguments) != len(fn.Params) {
		return nil
	}
	c := &gcall{fn: fn, args: make([]garg, len(x.Arguments))}
	for i, a := range x.Arguments {
		want := fn.Params[i]
		switch v := a.(type) {
		case *ast.StringNode:
			if want != builtins.String {
				return nil
			}
			c.args[i].lit = v.Value
		case *ast.IntegerNode:
			if want != builtins.Int {
				return nil
			}
			c.args[i].lit = v.Value
		case *ast.IdentifierNode:
			f := factNamed(v, reg, lets)
			if f == nil || f.Type != want {
				return nil
			}
			c.args[i].fact = f
		case *ast.CallNode:
			inner := callOf(v, reg, lets)
			if inner == nil || inner.fn.Result != want {
				return nil
			}
			c.args[i].call = inner
		default:
			return nil
		}
	}
	return c
}

// subjectAndLiteral finds a subject on one side and a constant on the other.
func subjectAndLiteral(l, r ast.Node, reg *builtins.Registry, lets map[string]bool) (*guard, ast.Node, bool) {
	if isLiteral(r) {
		if g, _ := subjectOf(l, reg, lets); g != nil {
			return g, r, false
		}
	}
	if isLiteral(l) {
		if g, _ := subjectOf(r, reg, lets); g != nil {
			return g, l, true
		}
	}
	return nil, nil, false
}

func isLiteral(n ast.Node) bool {
	switch x := n.(type) {
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
		return true
	case *ast.ArrayNode:
		for _, e := range x.Nodes {
			if !isLiteral(e) {
				return false
			}
		}
		return len(x.Nodes) > 0
	}
	return false
}

func (g *guard) subjectType() builtins.Type {
	if g.fact != nil {
		return g.fact.Type
	}
	return g.call.fn.Result
}

func makeGuard(g *guard, op string, lit ast.Node) *guard {
	g.op = op
	typ := g.subjectType()
	var elems []ast.Node
	if arr, ok := lit.(*ast.ArrayNode); ok {
		if op != "in" {
			return nil
		}
		elems = arr.Nodes
		g.op = "=="
	} else {
		if op == "in" {
			return nil
		}
		elems = []ast.Node{lit}
	}
	for _, e := range elems {
		switch v := e.(type) {
		case *ast.StringNode:
			if typ != builtins.String {
				return nil
			}
			g.strs = append(g.strs, v.Value)
		case *ast.IntegerNode:
			if typ != builtins.Int && typ != builtins.Float {
				return nil
			}
			g.nums = append(g.nums, float64(v.Value))
		case *ast.FloatNode:
			if typ != builtins.Int && typ != builtins.Float {
				return nil
			}
			g.nums = append(g.nums, v.Value)
		case *ast.BoolNode:
			if typ != builtins.Bool || len(elems) != 1 || (op != "==" && op != "!=") {
				return nil
			}
			g.b = v.Value == (op == "==")
			g.op = "=="
			return g
		default:
			return nil
		}
	}
	switch typ {
	case builtins.String:
		switch g.op {
		case "==", "!=", "contains", "startsWith", "endsWith":
			if g.op != "==" && len(g.strs) != 1 {
				return nil
			}
			return g
		}
	case builtins.Int, builtins.Float:
		switch g.op {
		case "==", "!=", "<", "<=", ">", ">=":
			if g.op != "==" && len(g.nums) != 1 {
				return nil
			}
			return g
		}
	}
	return nil
}

// value computes the guard's subject for the transaction's message.
func (g *guard) value(t *Txn) any {
	if g.fact != nil {
		return t.m.FactValue(g.fact.ID())
	}
	return g.call.run(t)
}

// run calls the function natively. Arguments go on the transaction's
// scratch stack, so a guard allocates nothing of its own.
func (c *gcall) run(t *Txn) any {
	if t.memoGen[c.id] == t.gen {
		return t.memo[c.id]
	}
	base := len(t.gargs)
	for i := range c.args {
		a := &c.args[i]
		switch {
		case a.fact != nil:
			t.gargs = append(t.gargs, t.m.FactValue(a.fact.ID()))
		case a.call != nil:
			t.gargs = append(t.gargs, a.call.run(t))
		default:
			t.gargs = append(t.gargs, a.lit)
		}
	}
	v := t.m.Call(c.fn, t.gargs[base:])
	clear(t.gargs[base:])
	t.gargs = t.gargs[:base]
	if t.m.Err() == nil {
		t.memo[c.id], t.memoGen[c.id] = v, t.gen
	}
	return v
}

// internCalls numbers the distinct calls in the rules' guards, so that
// "header(\"X-Campaign\")" in a thousand rules runs once per message.
func internCalls(rules []*Rule) int {
	ids := map[string]int{}
	var intern func(c *gcall) string
	intern = func(c *gcall) string {
		key := callKey(c, intern)
		id, ok := ids[key]
		if !ok {
			id = len(ids)
			ids[key] = id
		}
		c.id = id
		return strconv.Itoa(id)
	}
	for _, r := range rules {
		if r.compiled.guard != nil {
			r.compiled.guard.walk(func(g *guard) {
				if g.call != nil {
					intern(g.call)
				}
			})
		}
	}
	return len(ids)
}

// callKey is the same for equal calls; sub names a call in an argument.
func callKey(c *gcall, sub func(*gcall) string) string {
	var b strings.Builder
	b.WriteString(c.fn.Name)
	for i := range c.args {
		a := &c.args[i]
		switch {
		case a.fact != nil:
			fmt.Fprintf(&b, "\x00f%s", a.fact.Name)
		case a.call != nil:
			fmt.Fprintf(&b, "\x00c%s", sub(a.call))
		default:
			fmt.Fprintf(&b, "\x00l%T:%v", a.lit, a.lit)
		}
	}
	return b.String()
}

// lookupsOf returns the calls of Prefetchable functions among calls whose
// arguments are constants or facts that stay the same for every recipient:
// what the engine can hand Message.Prefetch.
func lookupsOf(calls []*ast.CallNode, reg *builtins.Registry, lets map[string]bool) []*gcall {
	var out []*gcall
	for _, x := range calls {
		c := callOf(x, reg, lets)
		if c == nil || !c.fn.Prefetchable {
			continue
		}
		if !slices.ContainsFunc(c.args, func(a garg) bool { return a.call != nil || a.fact != nil && a.fact.PerRecipient }) {
			out = append(out, c)
		}
	}
	return out
}

// callSites lists the distinct lookups of the rules of each phase.
func callSites(rules []*Rule) [builtins.NumPhases][]builtins.CallSite {
	var out [builtins.NumPhases][]builtins.CallSite
	seen := map[string]bool{}
	for _, r := range rules {
		for _, c := range r.compiled.lookups {
			key := r.Phase.String() + "\x00" + callKey(c, nil)
			if seen[key] {
				continue
			}
			seen[key] = true
			s := builtins.CallSite{Func: c.fn, Args: make([]builtins.CallArg, len(c.args))}
			for i, a := range c.args {
				s.Args[i] = builtins.CallArg{Lit: a.lit, Fact: a.fact}
			}
			out[r.Phase] = append(out[r.Phase], s)
		}
	}
	return out
}

// walk calls fn for g and every guard inside it.
func (g *guard) walk(fn func(*guard)) {
	fn(g)
	for _, p := range g.all {
		p.walk(fn)
	}
	for _, p := range g.any {
		p.walk(fn)
	}
}

// checkSafe is check with a panic in a native call (a bug in a function,
// or input nobody foresaw) turned into guardUnknown: the rule then runs in
// the VM, which recovers the same panic and reports it as an error of the
// rule, exactly as without guards. It never takes the relay down.
func (g *guard) checkSafe(t *Txn) (r guardResult) {
	base := len(t.gargs)
	defer func() {
		if recover() != nil {
			clear(t.gargs[base:])
			t.gargs = t.gargs[:base]
			t.m.ClearErr()
			r = guardUnknown
		}
	}()
	return g.check(t)
}

// check evaluates the guard for the transaction's message, computing what
// it needs. A fact that fails to compute gives guardUnknown, so the rule
// runs and reports it.
func (g *guard) check(t *Txn) guardResult {
	switch {
	case g.all != nil:
		for _, p := range g.all {
			if r := p.check(t); r != guardTrue {
				return r
			} else if !p.exact {
				// p may hold while its expression is false, and expr would
				// then not go on: neither may the guard, lest it compute
				// facts the rule does not read.
				return guardTrue
			}
		}
		return guardTrue
	case g.any != nil:
		for _, p := range g.any {
			if r := p.check(t); r != guardFalse {
				return r
			}
		}
		return guardFalse
	}
	m := t.m
	v := g.value(t)
	if m.Err() != nil {
		m.ClearErr()
		return guardUnknown
	}
	if g.holds(t, v) {
		return guardTrue
	}
	return guardFalse
}

func (g *guard) holds(t *Txn, v any) bool {
	switch x := v.(type) {
	case string:
		switch g.op {
		case "==":
			for _, s := range g.strs {
				if x == s {
					return true
				}
			}
			return false
		case "!=":
			return x != g.strs[0]
		case "contains":
			if g.matcher >= 0 {
				return t.matches(g.matcher, x)[g.pattern]
			}
			return strings.Contains(x, g.strs[0])
		case "startsWith":
			return strings.HasPrefix(x, g.strs[0])
		case "endsWith":
			return strings.HasSuffix(x, g.strs[0])
		}
	case bool:
		return x == g.b
	case int:
		return g.num(float64(x))
	case float64:
		return g.num(x)
	}
	return true
}

func (g *guard) num(x float64) bool {
	switch g.op {
	case "==":
		for _, n := range g.nums {
			if x == n {
				return true
			}
		}
		return false
	case "!=":
		return x != g.nums[0]
	case "<":
		return x < g.nums[0]
	case "<=":
		return x <= g.nums[0]
	case ">":
		return x > g.nums[0]
	case ">=":
		return x >= g.nums[0]
	}
	return true
}

// factMatcher is the multi-pattern matcher of one fact's `contains` guards.
type factMatcher struct {
	fact *builtins.Fact
	m    *multiMatcher
}

// buildMatchers gives every fact read by two or more `contains` guards a
// shared matcher. Per-recipient facts change within a message and keep
// strings.Contains.
func buildMatchers(rules []*Rule) []factMatcher {
	byFact := map[*builtins.Fact][]*guard{}
	var order []*builtins.Fact
	for _, r := range rules {
		if r.compiled.guard == nil {
			continue
		}
		r.compiled.guard.leaves(func(g *guard) {
			if g.op != "contains" || g.fact == nil || g.fact.PerRecipient {
				return
			}
			if byFact[g.fact] == nil {
				order = append(order, g.fact)
			}
			byFact[g.fact] = append(byFact[g.fact], g)
		})
	}
	var out []factMatcher
	for _, f := range order {
		gs := byFact[f]
		if len(gs) < 2 {
			continue
		}
		patterns := make([]string, len(gs))
		for i, g := range gs {
			patterns[i] = g.strs[0]
			g.matcher, g.pattern = len(out), i
		}
		out = append(out, factMatcher{fact: f, m: newMultiMatcher(patterns)})
	}
	return out
}

// slot is a rule in a phase's list with a copy of its guard's hot fields.
// The slots of a phase lie side by side in memory, so a pass over thousands
// of rules whose simple guards fail reads memory in order instead of
// chasing a rule, its program and its guard each.
type slot struct {
	rule  *Rule
	kind  uint8 // slotNone, slotSimple, slotGuard
	op    uint8
	b     bool
	exact bool
	fact  int // fact ID of a simple guard
	str   string
	num   float64
	g     *guard
}

const (
	slotNone   = iota // no guard: run the rule
	slotSimple        // one fact against one constant, answered here
	slotGuard         // anything else: ask g
)

const (
	opEq = iota
	opNe
	opContains
	opStartsWith
	opEndsWith
	opLt
	opLe
	opGt
	opGe
)

var slotOps = map[string]uint8{"==": opEq, "!=": opNe, "contains": opContains, "startsWith": opStartsWith,
	"endsWith": opEndsWith, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe}

func newSlot(r *Rule, g *guard) slot {
	if g == nil {
		return slot{rule: r, kind: slotNone}
	}
	s := slot{rule: r, kind: slotGuard, g: g, exact: g.exact}
	op, ok := slotOps[g.op]
	if g.fact == nil || g.all != nil || g.any != nil || g.matcher >= 0 || !ok {
		return s
	}
	switch {
	case len(g.strs) == 1 && g.nums == nil:
		s.str = g.strs[0]
	case len(g.nums) == 1 && g.strs == nil:
		s.num = g.nums[0]
	case g.strs == nil && g.nums == nil && g.fact.Type == builtins.Bool:
		s.b = g.b
	default:
		return s
	}
	s.kind, s.op, s.fact = slotSimple, op, g.fact.ID()
	return s
}

func (s *slot) check(t *Txn) guardResult {
	switch s.kind {
	case slotNone:
		return guardUnknown
	case slotGuard:
		return s.g.checkSafe(t)
	}
	m := t.m
	v := m.FactValue(s.fact)
	if m.Err() != nil {
		m.ClearErr()
		return guardUnknown
	}
	var ok bool
	switch x := v.(type) {
	case string:
		switch s.op {
		case opEq:
			ok = x == s.str
		case opNe:
			ok = x != s.str
		case opContains:
			ok = strings.Contains(x, s.str)
		case opStartsWith:
			ok = strings.HasPrefix(x, s.str)
		case opEndsWith:
			ok = strings.HasSuffix(x, s.str)
		}
	case bool:
		ok = x == s.b
	case int:
		ok = s.cmp(float64(x))
	case float64:
		ok = s.cmp(x)
	default:
		return guardUnknown
	}
	if ok {
		return guardTrue
	}
	return guardFalse
}

func (s *slot) cmp(x float64) bool {
	switch s.op {
	case opEq:
		return x == s.num
	case opNe:
		return x != s.num
	case opLt:
		return x < s.num
	case opLe:
		return x <= s.num
	case opGt:
		return x > s.num
	case opGe:
		return x >= s.num
	}
	return false
}

// guardArena holds copies of every guard of a rule set, with their calls
// and arguments, in rule order in a few contiguous arrays: evaluating the
// guards of thousands of rules then walks memory in order rather than
// chasing pointers across the heap.
type guardArena struct {
	guards []guard
	ptrs   []*guard
	calls  []gcall
	args   []garg
}

// compactGuards copies the guards of rules into one arena and returns the
// copies, by rule index (nil where a rule has none).
func compactGuards(rules []*Rule) []*guard {
	var ng, np, nc, na int
	var countCall func(c *gcall)
	countCall = func(c *gcall) {
		nc++
		na += len(c.args)
		for i := range c.args {
			if c.args[i].call != nil {
				countCall(c.args[i].call)
			}
		}
	}
	for _, r := range rules {
		if r.compiled.guard == nil {
			continue
		}
		r.compiled.guard.walk(func(g *guard) {
			ng++
			np += len(g.all) + len(g.any)
			if g.call != nil {
				countCall(g.call)
			}
		})
	}
	a := &guardArena{guards: make([]guard, 0, ng), ptrs: make([]*guard, 0, np), calls: make([]gcall, 0, nc), args: make([]garg, 0, na)}
	out := make([]*guard, len(rules))
	for i, r := range rules {
		if r.compiled.guard != nil {
			out[i] = a.guard(r.compiled.guard)
		}
	}
	return out
}

func (a *guardArena) guard(g *guard) *guard {
	a.guards = append(a.guards, *g)
	ng := &a.guards[len(a.guards)-1]
	if g.call != nil {
		ng.call = a.call(g.call)
	}
	ng.all = a.list(g.all)
	ng.any = a.list(g.any)
	return ng
}

func (a *guardArena) list(gs []*guard) []*guard {
	if gs == nil {
		return nil
	}
	start := len(a.ptrs)
	a.ptrs = append(a.ptrs, make([]*guard, len(gs))...)
	list := a.ptrs[start:len(a.ptrs):len(a.ptrs)]
	for i, g := range gs {
		list[i] = a.guard(g)
	}
	return list
}

func (a *guardArena) call(c *gcall) *gcall {
	a.calls = append(a.calls, *c)
	nc := &a.calls[len(a.calls)-1]
	start := len(a.args)
	a.args = append(a.args, c.args...)
	nc.args = a.args[start:len(a.args):len(a.args)]
	for i := range nc.args {
		if nc.args[i].call != nil {
			nc.args[i].call = a.call(nc.args[i].call)
		}
	}
	return nc
}

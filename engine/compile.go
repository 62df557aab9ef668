package engine

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicemail/sluice/builtins"
)

// exprCompiler compiles `when` expressions against one registry. It is used
// by one load at a time and thrown away afterwards.
type exprCompiler struct {
	reg       *builtins.Registry
	cfg       *conf.Config
	factNames []string
	funcNames []string
}

func newExprCompiler(reg *builtins.Registry) *exprCompiler {
	c := &exprCompiler{reg: reg, cfg: exprConfig(reg)}
	for _, f := range reg.Facts() {
		c.factNames = append(c.factNames, f.Name)
	}
	for _, f := range reg.Funcs() {
		c.funcNames = append(c.funcNames, f.Name)
	}
	for _, b := range builtin.Builtins {
		c.funcNames = append(c.funcNames, b.Name)
	}
	return c
}

var messageType = reflect.TypeFor[*builtins.Message]()

// accessorName is the hidden function through which compiled expressions
// read a fact of type t.
func accessorName(t builtins.Type) string {
	name, list := strings.CutPrefix(t.String(), "[]")
	if list {
		name += "_list"
	}
	return "__fact_" + name
}

// exprConfig is the expr configuration rules compile against. The
// environment is the *builtins.Message itself: each fact name becomes a call
// __fact_T($env, id) returning the message's cached value, and each registry
// function receives $env first, so evaluation needs no map lookups and
// reading a fact allocates nothing.
func exprConfig(reg *builtins.Registry) *conf.Config {
	cfg := conf.CreateNew()
	cfg.WithEnv(&builtins.Message{})
	read := func(params ...any) (any, error) {
		return params[0].(*builtins.Message).FactValue(params[1].(int)), nil
	}
	for _, t := range builtins.Types {
		sig := reflect.FuncOf([]reflect.Type{messageType, reflect.TypeFor[int]()}, []reflect.Type{t.GoType()}, false)
		expr.Function(accessorName(t), read, reflect.New(sig).Interface())(cfg)
	}
	for _, f := range reg.Funcs() {
		in := []reflect.Type{messageType}
		for _, p := range f.Params {
			in = append(in, p.GoType())
		}
		sig := reflect.FuncOf(in, []reflect.Type{f.Result.GoType()}, false)
		expr.Function(f.Name, func(params ...any) (any, error) {
			return params[0].(*builtins.Message).Call(f, params[1:]), nil
		}, reflect.New(sig).Interface())(cfg)
	}
	cfg.Check()
	return cfg
}

// exprError is a problem at byte offset Off of the expression.
type exprError struct {
	Off int
	Msg string
}

// compiled is an expression ready to run, with what the engine needs to know
// about it: which facts it reads, hence its phase.
type compiled struct {
	prog     *vm.Program
	facts    []*builtins.Fact // in order of first appearance
	evidence []evidenceCall
	phase    builtins.Phase
	perRcpt  bool
	// lists are the constant list names given to in_list.
	lists []listRef
	// guard, when set, is checked natively before the program runs.
	guard *guard
	// lookups are the expression's calls of Prefetchable functions that
	// can be made ahead of it (lookupsOf).
	lookups []*gcall
	// pos maps a character offset of the expression to FILE:LINE:COL in
	// the rules file, for errors at run time; nil for expressions
	// compiled outside a file.
	pos func(off int) string
}

type listRef struct {
	name string
	off  int
}

// evidenceCall is a call worth showing as evidence when the rule fires, e.g.
// header("X-Mailer"), compiled on its own.
type evidenceCall struct {
	label string
	prog  *vm.Program
}

// compileWhen compiles a rule's `when`, which must give a bool.
func (c *exprCompiler) compileWhen(src string) (*compiled, []exprError) {
	if strings.TrimSpace(src) == "" {
		return nil, []exprError{{0, "empty expression"}}
	}
	tree, err := parser.ParseWithConfig(src, c.cfg)
	if err != nil {
		return nil, []exprError{c.fileErr(src, err)}
	}
	out := &compiled{}
	var errs []exprError
	sc := &scan{c: c}
	ast.Walk(&tree.Node, sc)
	seen := map[string]bool{}
	for _, id := range sc.idents {
		name := id.Value
		if sc.callees[id] || sc.lets[name] {
			continue
		}
		if name == "$env" || strings.HasPrefix(name, "__") {
			errs = append(errs, c.at(src, id, fmt.Sprintf("%s is not available in rules: name facts directly", name)))
			continue
		}
		f, ok := c.reg.Fact(name)
		if !ok {
			if _, isFn := c.reg.Func(name); isFn {
				errs = append(errs, c.at(src, id, fmt.Sprintf("%s is a function: call it, as in %s", name, c.signature(name))))
				continue
			}
			errs = append(errs, c.at(src, id, fmt.Sprintf("unknown name %s%s", name, didYouMean(name, append(c.factNames, sc.letNames()...)))))
			continue
		}
		if !seen[name] {
			seen[name] = true
			out.facts = append(out.facts, f)
			out.phase = max(out.phase, f.Phase)
			out.perRcpt = out.perRcpt || f.PerRecipient
		}
	}
	for _, call := range sc.calls {
		id := call.Callee.(*ast.IdentifierNode)
		name := id.Value
		if sc.lets[name] {
			continue
		}
		if _, isFact := c.reg.Fact(name); isFact {
			errs = append(errs, c.at(src, id, fmt.Sprintf("%s is a fact, not a function: write %s without parentheses", name, name)))
			continue
		}
		fn, ok := c.reg.Func(name)
		if !ok {
			errs = append(errs, c.at(src, id, fmt.Sprintf("unknown function %s%s", name, didYouMean(name, c.funcNames))))
			continue
		}
		if len(call.Arguments) != len(fn.Params) {
			errs = append(errs, c.at(src, id, fmt.Sprintf("%s takes %d argument(s), got %d: %s", name, len(fn.Params), len(call.Arguments), fn.Signature)))
			continue
		}
		out.phase = max(out.phase, fn.Phase)
		if name == "in_list" && len(call.Arguments) > 0 {
			if sn, ok := call.Arguments[0].(*ast.StringNode); ok {
				out.lists = append(out.lists, listRef{sn.Value, runeToByte(src, sn.Location().From)})
			}
		}
	}
	for name := range sc.lets {
		if _, ok := c.reg.Fact(name); ok {
			errs = append(errs, exprError{0, fmt.Sprintf("let %s hides the fact %s: pick another name", name, name)})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// Labels and the guard are taken before the fact names are rewritten.
	labels := sc.evidenceLabels(c)
	out.guard = findGuard(tree.Node, c.reg, sc.lets)
	out.lookups = lookupsOf(sc.calls, c.reg, sc.lets)

	patchFacts(tree, c.reg, sc.lets)
	t, err := checker.Check(tree, c.cfg)
	if err != nil {
		return nil, []exprError{c.fileErr(src, err)}
	}
	if t != nil && t.Kind() != reflect.Bool && t.Kind() != reflect.Interface {
		return nil, []exprError{{0, fmt.Sprintf("the expression must be true or false, but it gives %s", typeName(t))}}
	}
	if err := optimizer.Optimize(&tree.Node, c.cfg); err != nil {
		return nil, []exprError{c.fileErr(src, err)}
	}
	prog, err := compiler.Compile(tree, c.cfg)
	if err != nil {
		return nil, []exprError{c.fileErr(src, err)}
	}
	out.prog = prog
	for _, l := range labels {
		if p, err := c.compileAny(l); err == nil {
			out.evidence = append(out.evidence, evidenceCall{label: l, prog: p})
		}
	}
	return out, nil
}

// compileAny compiles an expression of any type (evidence calls).
func (c *exprCompiler) compileAny(src string) (*vm.Program, error) {
	tree, err := parser.ParseWithConfig(src, c.cfg)
	if err != nil {
		return nil, err
	}
	patchFacts(tree, c.reg, nil)
	if _, err := checker.Check(tree, c.cfg); err != nil {
		return nil, err
	}
	return compiler.Compile(tree, c.cfg)
}

func (c *exprCompiler) signature(name string) string {
	if f, ok := c.reg.Func(name); ok {
		return f.Signature
	}
	return name + "(...)"
}

// fileErr converts an expr error to an offset into src.
func (c *exprCompiler) fileErr(src string, err error) exprError {
	var fe *file.Error
	if errors.As(err, &fe) {
		return exprError{runeToByte(src, fe.From), cleanMsg(fe.Message)}
	}
	return exprError{0, cleanMsg(err.Error())}
}

func (c *exprCompiler) at(src string, n ast.Node, msg string) exprError {
	return exprError{runeToByte(src, n.Location().From), msg}
}

// cleanMsg rewrites expr's messages in the operator's terms: after fact names
// become calls, a type error would otherwise speak of "func() string".
func cleanMsg(m string) string {
	for _, t := range builtins.Types {
		if t.Record() == "" {
			continue
		}
		// "type builtins.Attachment has no field sizee"
		prefix := "type " + t.GoType().Elem().String() + " has no field "
		if name, ok := strings.CutPrefix(m, prefix); ok {
			var names []string
			for _, f := range t.Fields() {
				names = append(names, f.Name)
			}
			return fmt.Sprintf("%s records have no field %s%s; their fields: %s", t.Record(), name, didYouMean(name, names), strings.Join(names, ", "))
		}
	}
	r := strings.NewReplacer("float64", "float", "interface {}", "any",
		"builtins.Attachment", "attachment", "builtins.Part", "part")
	return strings.TrimSpace(r.Replace(m))
}

func typeName(t reflect.Type) string {
	return cleanMsg(t.String())
}

func runeToByte(s string, r int) int {
	i := 0
	for n := 0; n < r && i < len(s); n++ {
		_, w := utf8.DecodeRuneInString(s[i:])
		i += w
	}
	return i
}

// scan collects what an expression names.
type scan struct {
	c       *exprCompiler
	idents  []*ast.IdentifierNode
	calls   []*ast.CallNode
	callees map[*ast.IdentifierNode]bool
	lets    map[string]bool
}

func (s *scan) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		s.idents = append(s.idents, n)
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			if s.callees == nil {
				s.callees = map[*ast.IdentifierNode]bool{}
			}
			s.callees[id] = true
			s.calls = append(s.calls, n)
		}
	case *ast.VariableDeclaratorNode:
		if s.lets == nil {
			s.lets = map[string]bool{}
		}
		s.lets[n.Name] = true
	}
}

func (s *scan) letNames() []string {
	out := make([]string, 0, len(s.lets))
	for n := range s.lets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// evidenceLabels returns the calls of message-reading functions (header,
// has_header, in_list) whose arguments use only constants and facts: their
// values explain a verdict better than the facts alone.
func (s *scan) evidenceLabels(c *exprCompiler) []string {
	type label struct {
		text string
		at   int
	}
	var found []label
	seen := map[string]bool{}
	for _, call := range s.calls {
		name := call.Callee.(*ast.IdentifierNode).Value
		fn, ok := c.reg.Func(name)
		if !ok || (fn.Phase != builtins.Data && name != "in_list") {
			continue
		}
		if !standalone(call, c.reg) {
			continue
		}
		l := call.String()
		if !seen[l] {
			seen[l] = true
			found = append(found, label{l, call.Callee.Location().From})
		}
	}
	// In the order they are written.
	sort.SliceStable(found, func(i, j int) bool { return found[i].at < found[j].at })
	out := make([]string, len(found))
	for i, l := range found {
		out[i] = l.text
	}
	return out
}

// standalone reports whether a call can be evaluated outside its rule:
// its arguments reference nothing but constants, facts and functions.
func standalone(n ast.Node, reg *builtins.Registry) bool {
	ok := true
	var v visitFunc = func(node *ast.Node) {
		switch x := (*node).(type) {
		case *ast.PointerNode, *ast.VariableDeclaratorNode, *ast.PredicateNode:
			ok = false
		case *ast.IdentifierNode:
			_, isFact := reg.Fact(x.Value)
			_, isFn := reg.Func(x.Value)
			if !isFact && !isFn {
				ok = false
			}
		}
	}
	ast.Walk(&n, v)
	return ok
}

type visitFunc func(*ast.Node)

func (f visitFunc) Visit(n *ast.Node) { f(n) }

// patchFacts rewrites each fact name into __fact_T($env, id), and passes $env
// to every registry function, so that a fact is computed only when
// evaluation reaches it (short-circuiting `and` and `or` skip the rest) and
// then cached for the message.
func patchFacts(tree *parser.Tree, reg *builtins.Registry, lets map[string]bool) {
	var callees = map[*ast.IdentifierNode]bool{}
	var collect visitFunc = func(node *ast.Node) {
		if call, ok := (*node).(*ast.CallNode); ok {
			if id, ok := call.Callee.(*ast.IdentifierNode); ok {
				callees[id] = true
			}
		}
	}
	ast.Walk(&tree.Node, collect)
	env := func(at ast.Node) ast.Node {
		n := &ast.IdentifierNode{Value: "$env"}
		n.SetLocation(at.Location())
		return n
	}
	var patch visitFunc = func(node *ast.Node) {
		switch n := (*node).(type) {
		case *ast.CallNode:
			id, ok := n.Callee.(*ast.IdentifierNode)
			if !ok || lets[id.Value] {
				return
			}
			if _, isFn := reg.Func(id.Value); isFn {
				n.Arguments = append([]ast.Node{env(n)}, n.Arguments...)
			}
		case *ast.IdentifierNode:
			if callees[n] || lets[n.Value] {
				return
			}
			f, isFact := reg.Fact(n.Value)
			if !isFact {
				return
			}
			callee := &ast.IdentifierNode{Value: accessorName(f.Type)}
			callee.SetLocation(n.Location())
			id := &ast.IntegerNode{Value: f.ID()}
			id.SetLocation(n.Location())
			ast.Patch(node, &ast.CallNode{Callee: callee, Arguments: []ast.Node{env(n), id}})
		}
	}
	ast.Walk(&tree.Node, patch)
}

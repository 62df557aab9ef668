package engine

import (
	"strings"

	"github.com/expr-lang/expr/ast"

	"github.com/sluicemail/sluice/builtins"
)

// guard is a cheap native pre-check of a rule: the leftmost conjunct of its
// expression when that conjunct compares one fact with constants. Since
// `and` evaluates left to right and stops at the first false operand, a
// false guard means the expression is false without evaluating anything
// else, so skipping the rule changes nothing but the time spent: in large
// rule sets most rules are "this domain", "this user", "this keyword" and
// are decided here without entering the VM.
type guard struct {
	fact *builtins.Fact
	op   string
	strs []string  // constants for string facts
	nums []float64 // constants for numeric facts
	b    bool      // constant for bool facts

	// matcher, when >= 0, answers a `contains` guard from the rule set's
	// shared multi-pattern matcher: pattern is this guard's index in it.
	matcher int
	pattern int
}

// findGuard returns the guard of an expression (before fact names are
// rewritten), or nil.
func findGuard(n ast.Node, reg *builtins.Registry, lets map[string]bool) *guard {
	switch x := n.(type) {
	case *ast.BinaryNode:
		switch x.Operator {
		case "and", "&&":
			return findGuard(x.Left, reg, lets)
		case "or", "||":
			// a == "x" or a == "y" on the same fact is a set.
			l, r := findGuard(x.Left, reg, lets), findGuard(x.Right, reg, lets)
			if l != nil && r != nil && l.fact == r.fact && l.op == "==" && r.op == "==" && l.fact.Type == builtins.String {
				return &guard{fact: l.fact, op: "==", strs: append(append([]string{}, l.strs...), r.strs...), matcher: -1}
			}
			return nil
		}
		fact, lit, flipped := factAndLiteral(x.Left, x.Right, reg, lets)
		if fact == nil {
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
		return makeGuard(fact, op, lit)
	case *ast.UnaryNode:
		if x.Operator == "not" || x.Operator == "!" {
			if id, ok := x.Node.(*ast.IdentifierNode); ok {
				if f := factNamed(id, reg, lets); f != nil && f.Type == builtins.Bool {
					return &guard{fact: f, op: "==", b: false, matcher: -1}
				}
			}
		}
	case *ast.IdentifierNode:
		if f := factNamed(x, reg, lets); f != nil && f.Type == builtins.Bool {
			return &guard{fact: f, op: "==", b: true, matcher: -1}
		}
	}
	return nil
}

func factNamed(id *ast.IdentifierNode, reg *builtins.Registry, lets map[string]bool) *builtins.Fact {
	if lets[id.Value] {
		return nil
	}
	f, _ := reg.Fact(id.Value)
	return f
}

// factAndLiteral finds a fact on one side and a constant on the other.
func factAndLiteral(l, r ast.Node, reg *builtins.Registry, lets map[string]bool) (*builtins.Fact, ast.Node, bool) {
	if id, ok := l.(*ast.IdentifierNode); ok {
		if f := factNamed(id, reg, lets); f != nil && isLiteral(r) {
			return f, r, false
		}
	}
	if id, ok := r.(*ast.IdentifierNode); ok {
		if f := factNamed(id, reg, lets); f != nil && isLiteral(l) {
			return f, l, true
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

func makeGuard(f *builtins.Fact, op string, lit ast.Node) *guard {
	g := &guard{fact: f, op: op, matcher: -1}
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
			if f.Type != builtins.String {
				return nil
			}
			g.strs = append(g.strs, v.Value)
		case *ast.IntegerNode:
			if f.Type != builtins.Int && f.Type != builtins.Float {
				return nil
			}
			g.nums = append(g.nums, float64(v.Value))
		case *ast.FloatNode:
			if f.Type != builtins.Int && f.Type != builtins.Float {
				return nil
			}
			g.nums = append(g.nums, v.Value)
		case *ast.BoolNode:
			if f.Type != builtins.Bool || len(elems) != 1 || (op != "==" && op != "!=") {
				return nil
			}
			g.b = v.Value == (op == "==")
			g.op = "=="
			return g
		default:
			return nil
		}
	}
	switch f.Type {
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

// pass reports whether the guard holds for the transaction's message,
// computing the fact if needed. A fact that fails to compute passes, so the
// rule runs and reports it.
func (g *guard) pass(t *Txn) bool {
	m := t.m
	v := m.FactValue(g.fact.ID())
	if m.Err() != nil {
		m.ClearErr()
		return true
	}
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
		g := r.compiled.guard
		if g == nil || g.op != "contains" || g.fact.PerRecipient {
			continue
		}
		if byFact[g.fact] == nil {
			order = append(order, g.fact)
		}
		byFact[g.fact] = append(byFact[g.fact], g)
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

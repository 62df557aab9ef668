package builtins

import (
	"slices"
	"sync"
)

// CallSite is a call of a Prefetchable function as a rule writes it, each
// argument a constant or a fact: what the engine can make ahead of the rule.
type CallSite struct {
	Func *Func
	Args []CallArg
}

// CallArg is a constant (Lit) or the value of a fact (Fact).
type CallArg struct {
	Lit  any
	Fact *Fact
}

// callState holds the results of Prefetchable calls made in the current
// transaction, and the calls of the current phase not made yet. A result
// depends only on the arguments, so it stays valid while facts change (a
// new recipient, the message at DATA); a new transaction (RSET, a second
// EHLO) starts afresh, so that one connection's results cannot pile up.
type callState struct {
	done    []callResult
	pending []CallSite
}

type callResult struct {
	fn   *Func
	args []any
	v    any
}

func (c *callState) reset() {
	clear(c.done)
	c.done, c.pending = c.done[:0], nil
}

func (c *callState) invalidate(p Phase) {
	if p <= Mail {
		c.reset()
	}
	c.pending = nil
}

// find returns the result of fn on args, if the call was made. Arguments
// are scalars (RegisterFunc), so == compares them.
func (c *callState) find(fn *Func, args []any) (any, bool) {
	for i := range c.done {
		if r := &c.done[i]; r.fn == fn && slices.Equal(r.args, args) {
			return r.v, true
		}
	}
	return nil, false
}

// Call runs fn on args for m, as rules call it. A Prefetchable function's
// equal calls run once for the message, and its first call in a phase runs
// every pending call of the phase (Prefetch) together.
func (m *Message) Call(fn *Func, args []any) any {
	if !fn.Prefetchable {
		return fn.Call(m, args)
	}
	if v, ok := m.calls.find(fn, args); ok {
		return v
	}
	if len(m.calls.pending) > 0 {
		m.runPending(fn, args)
		if v, ok := m.calls.find(fn, args); ok {
			return v
		}
	}
	clean := m.err == nil
	v := fn.Call(m, args)
	if clean && m.err == nil {
		m.calls.done = append(m.calls.done, callResult{fn, slices.Clone(args), v})
	}
	return v
}

// runPending makes the phase's pending calls, and fn(args), at once. Their
// arguments are computed here, first: a fact that cannot be computed leaves
// its call to the rule that makes it, which then reports the failure.
func (m *Message) runPending(fn *Func, args []any) {
	sites := m.calls.pending
	m.calls.pending = nil
	jobs := []callResult{{fn: fn, args: slices.Clone(args)}}
	err := m.err
	for _, s := range sites {
		a := make([]any, len(s.Args))
		ok := true
		for i, arg := range s.Args {
			a[i] = arg.Lit
			if arg.Fact != nil {
				a[i] = m.get(arg.Fact.id)
				ok = ok && m.state[arg.Fact.id] != stateFailed
			}
		}
		if _, made := m.calls.find(s.Func, a); ok && !made && !slices.ContainsFunc(jobs, func(j callResult) bool {
			return j.fn == s.Func && slices.Equal(j.args, a)
		}) {
			jobs = append(jobs, callResult{fn: s.Func, args: a})
		}
	}
	m.err = err
	if len(jobs) < 2 {
		return // nothing to overlap: the caller makes its call itself
	}
	ok := make([]bool, len(jobs))
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() {
			// A panic (a bug) loses only this result: the rule's own call
			// then panics where the engine recovers and reports it.
			defer func() { _ = recover() }()
			jobs[i].v = jobs[i].fn.Call(m, jobs[i].args)
			ok[i] = true
		})
	}
	wg.Wait()
	for i, j := range jobs {
		if ok[i] {
			m.calls.done = append(m.calls.done, j)
		}
	}
}

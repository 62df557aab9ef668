package engine

import (
	"fmt"
	"sort"

	"github.com/sluicemail/sluice/builtins"
)

// lint finds what loads fine but likely does not do what the operator meant.
func (rs *RuleSet) lint(l *loader) []Problem {
	var out []Problem
	warn := func(r *Rule, format string, args ...any) {
		out = append(out, Problem{File: r.File, Line: r.Line, Col: r.Col, Msg: "warning: " + fmt.Sprintf(format, args...)})
	}
	scoring := false
	written := map[string]bool{} // lists that list actions fill
	for _, r := range rs.rules {
		if r.Then.Kind == ActList {
			written[r.Then.List] = true
		}
	}
	for _, r := range rs.rules {
		if r.Then.Kind == ActScore && !r.Shadow {
			scoring = true
		}
		// Rules run phase by phase, so an accept written before a block
		// still loses to it when the block's facts are known earlier.
		if r.Then.Kind == ActAccept && !r.Shadow {
			for _, b := range rs.rules[r.Index+1:] {
				if b.Then.Kind == ActBlock && !b.Shadow && b.Phase < r.Phase && (!b.PerRecipient || r.PerRecipient) {
					warn(r, "accept rule %s runs at %s and cannot override block rule %s (%s), which runs earlier, at %s", r.Name, r.Phase, b.Name, b.Where(), b.Phase)
				}
			}
		}
		if r.PerRecipient && r.Phase == builtins.Data {
			warn(r, "rule %s reads rcpt and facts known only after DATA, when a single recipient can no longer be refused: it runs per recipient after DATA and a block refuses the whole message", r.Name)
		}
		for _, ref := range r.compiled.lists {
			if _, ok := rs.lists[ref.name]; ok || isDynamicList(ref.name) || written[ref.name] {
				continue
			}
			names := append(rs.ListNames(), DynamicLists...)
			warn(r, "rule %s uses list %q, which no rules file defines and the store does not keep by default%s", r.Name, ref.name, didYouMean(ref.name, names))
		}
	}
	t := rs.thresholds
	if scoring && t.Reject == nil && t.Hold == nil && t.Tag == nil {
		out = append(out, Problem{File: rs.firstFile(), Msg: "warning: rules add to the score but no thresholds are defined, so scores change nothing"})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}

func isDynamicList(name string) bool {
	for _, d := range DynamicLists {
		if d == name {
			return true
		}
	}
	return false
}

func (rs *RuleSet) firstFile() string {
	if len(rs.rules) > 0 {
		return rs.rules[0].File
	}
	return rs.dir
}

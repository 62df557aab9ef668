// Package engine owns the rules: it loads a rules directory into an immutable,
// compiled RuleSet, infers each rule's SMTP phase, and evaluates messages into a
// Verdict that explains itself.
package engine

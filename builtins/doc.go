// Package builtins owns the facts and functions that rules can use: a registry in
// which each fact declares its name, type, phase and documentation, and the code
// that computes it lazily, at most once per message.
package builtins

// Package server is the SMTP relay: listeners on go-smtp (plain, STARTTLS
// submission, implicit TLS), sessions that run the engine's rules at every
// SMTP phase, AUTH PLAIN and LOGIN against the accounts of the config file,
// the spool of package queue (a 250 is given only once message and envelope
// are fsynced) with its holding area and its delivery (a local directory, a
// smarthost or each domain's MX), wired to the relay's config, metrics and
// store, and hot reload of the rules and the config.
package server

// Package queue is the relay's durable spool (messages, envelopes, the queue and the holding
// area, crash recovery) and their delivery: retries, pooled SMTP sessions, local folders, bounces.
package queue

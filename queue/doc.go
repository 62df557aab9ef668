// Package queue is the relay's durable spool: each message and its envelope
// and delivery state, the queue and the holding area, crash recovery.
package queue

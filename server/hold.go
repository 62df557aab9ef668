package server

import (
	"time"
)

// Release moves a held message to the queue for delivery now. A running
// relay picks it up within seconds.
func (s *Spool) Release(id string, now time.Time) error {
	env, err := s.Envelope(AreaHold, id)
	if err != nil {
		return err
	}
	env.NextAttempt = now.UTC()
	env.Reason = ""
	if err := s.Update(AreaHold, env); err != nil {
		return err
	}
	return s.Move(AreaHold, AreaQueue, id)
}

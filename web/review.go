package web

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemail/sluice/store"
)

// Review is a sender's request that a decision be looked at again.
type Review struct {
	ID       string    `json:"id"`
	Decision string    `json:"decision"`
	Contact  string    `json:"contact"`
	Message  string    `json:"message"`
	At       time.Time `json:"at"`
	Status   string    `json:"status"` // open, answered
	Answer   string    `json:"answer,omitempty"`
	Answered time.Time `json:"answered,omitzero"`
}

const (
	// reviewTTL is how long review requests are kept.
	reviewTTL = 90 * 24 * time.Hour
	// reviewIndex is the store list whose keys are the review ids: the
	// store has no record listing, and a list entry is added atomically
	// by any relay sharing it.
	reviewIndex = "_reviews"
	// A client address may request reviewsPerIP reviews an hour, and a
	// decision get reviewsPerDecision.
	reviewsPerIP       = 3
	reviewsPerDecision = 3
	// csrfTTL is how long a review form can be sent after it was shown.
	csrfTTL = 24 * time.Hour
)

// csrfToken binds the review form to decision id and the time it was
// shown: no session is needed, and a form cannot be forged for another
// decision or kept for ever.
func (s *Server) csrfToken(id string) string {
	t := strconv.FormatInt(s.opts.Now().Unix(), 10)
	return t + "." + b64.EncodeToString(mac(s.opts.LinkKey, "review", id, t))
}

func (s *Server) csrfOK(id, tok string) bool {
	t, sig, ok := strings.Cut(tok, ".")
	unix, err := strconv.ParseInt(t, 10, 64)
	got, err2 := b64.DecodeString(sig)
	if !ok || err != nil || err2 != nil || !hmac.Equal(got, mac(s.opts.LinkKey, "review", id, t)) {
		return false
	}
	age := s.opts.Now().Sub(time.Unix(unix, 0))
	return age > -5*time.Minute && age < csrfTTL
}

// review serves POST /report/ID/review.
func (s *Server) review(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	id := r.PathValue("id")
	if err := r.ParseForm(); err != nil {
		s.fail(w, http.StatusBadRequest, "Request not understood", "The form could not be read.")
		return
	}
	p, code := s.reportPage(r.Context(), id, r.PostForm.Get("sig"))
	if p == nil {
		s.failReport(w, code)
		return
	}
	if !s.csrfOK(id, r.PostForm.Get("csrf")) {
		s.fail(w, http.StatusForbidden, "Please send the form again", "The form was too old or did not come from the report page. Open the report link again and resend your request.")
		return
	}
	contact, msg := strings.TrimSpace(r.PostForm.Get("contact")), strings.TrimSpace(r.PostForm.Get("message"))
	p.Contact, p.Message = contact, msg
	if a, err := mail.ParseAddress(contact); err != nil || a.Address != contact || len(contact) > 254 {
		p.Problem = "Please give an email address we can answer at."
	} else if msg == "" || len(msg) > 4000 {
		p.Problem = "Please tell us in a few words (at most 4000 characters) why this was a mistake."
	}
	if p.Problem != "" {
		s.render(w, http.StatusBadRequest, "report.html", p)
		return
	}
	now := s.opts.Now()
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	counts, err := s.opts.Store.Count(r.Context(), now, 1, []string{"web_review_ip:" + ip, "web_review_decision:" + id}, []time.Duration{time.Hour})
	if err != nil {
		s.opts.Log.Warn("web: review rate", "id", id, "err", err.Error())
		s.failReport(w, http.StatusServiceUnavailable)
		return
	}
	if counts[0][0] > reviewsPerIP || counts[1][0] > reviewsPerDecision {
		w.Header().Set("Retry-After", "3600")
		s.fail(w, http.StatusTooManyRequests, "Too many requests", "Reviews were already requested from here or for this decision in the last hour. We answer those first; please wait before asking again.")
		return
	}
	rv := Review{ID: s.ids.Next(now), Decision: id, Contact: contact, Message: msg, At: now.UTC(), Status: "open"}
	if err := PutReview(r.Context(), s.opts.Store, rv); err != nil {
		s.opts.Log.Error("web: review", "id", id, "err", err.Error())
		s.failReport(w, http.StatusServiceUnavailable)
		return
	}
	s.opts.Log.Info("review requested", "review", rv.ID, "decision", id)
	// Post/redirect/get: a reload does not send the request twice.
	http.Redirect(w, r, "/report/"+url.PathEscape(id)+"?sig="+url.QueryEscape(p.Sig)+"&review="+rv.ID+"#review", http.StatusSeeOther)
}

// ErrNoReview is the error of a review id that is not in the store.
var ErrNoReview = errors.New("no such review request")

// PutReview stores a review request (new or answered).
func PutReview(ctx context.Context, st store.Store, rv Review) error {
	b, err := json.Marshal(rv)
	if err != nil {
		return err
	}
	if err := st.Put(ctx, "review", rv.ID, b, reviewTTL); err != nil {
		return fmt.Errorf("review %s: %w", rv.ID, err)
	}
	return st.ListAdd(ctx, store.Entry{List: reviewIndex, Key: rv.ID, Source: "report page", Added: rv.At, Expires: rv.At.Add(reviewTTL)})
}

// GetReview reads a review request; ErrNoReview when there is none.
func GetReview(ctx context.Context, st store.Store, id string) (*Review, error) {
	b, err := st.Get(ctx, "review", id)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, ErrNoReview
	}
	var rv Review
	return &rv, json.Unmarshal(b, &rv)
}

// ListReviews returns the review requests kept, oldest first.
func ListReviews(ctx context.Context, st store.Store, now time.Time) ([]Review, error) {
	es, err := st.ListEntries(ctx, reviewIndex, now)
	if err != nil {
		return nil, err
	}
	out := []Review{}
	for _, e := range es {
		rv, err := GetReview(ctx, st, strings.ToUpper(e.Key)) // list keys are normalised to lower case
		if errors.Is(err, ErrNoReview) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *rv)
	}
	return out, nil
}

// AnswerReview records the operator's answer to a review request.
func AnswerReview(ctx context.Context, st store.Store, id, answer string, now time.Time) (*Review, error) {
	rv, err := GetReview(ctx, st, id)
	if err != nil {
		return nil, err
	}
	rv.Status, rv.Answer, rv.Answered = "answered", answer, now.UTC()
	return rv, PutReview(ctx, st, *rv)
}

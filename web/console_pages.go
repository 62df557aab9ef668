package web

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicemail/sluice/store"
)

// reviewsPage is the console's front page: the review requests, open first.
func (c *Console) reviewsPage(w http.ResponseWriter, r *http.Request) {
	rvs, err := c.opts.Relay.Reviews(r.Context())
	if err != nil {
		c.oops(w, r, "read the reviews", err)
		return
	}
	slices.Reverse(rvs) // newest first
	slices.SortStableFunc(rvs, func(a, b Review) int {
		return strings.Compare(statusOrder(a.Status), statusOrder(b.Status))
	})
	c.show(w, r, http.StatusOK, "reviews", "Review requests", "console_reviews.html", rvs)
}

func statusOrder(s string) string {
	if s == "open" {
		return "0"
	}
	return "1" + s
}

type reviewView struct {
	Review   *Review
	Decision *Decision
	Held     *Held
	Listed   []string // block lists the sender is on
	Allow    string
}

func (c *Console) reviewView(r *http.Request, id string) (*reviewView, error) {
	rv, err := c.opts.Relay.Review(r.Context(), id)
	if err != nil {
		return nil, err
	}
	v := &reviewView{Review: rv, Allow: c.opts.AllowList}
	if v.Decision, err = c.opts.Relay.Decision(r.Context(), rv.Decision); err != nil {
		return nil, err
	}
	held, err := c.opts.Relay.Held(r.Context())
	if err != nil {
		return nil, err
	}
	for i := range held {
		if held[i].ID == rv.Decision {
			v.Held = &held[i]
		}
	}
	if v.Decision != nil && v.Decision.From != "" {
		for _, l := range c.opts.Relay.ListNames() {
			if l == c.opts.AllowList {
				continue
			}
			es, err := c.opts.Relay.ListEntries(r.Context(), l)
			if err != nil {
				return nil, err
			}
			if slices.ContainsFunc(es, func(e store.Entry) bool { return strings.EqualFold(e.Key, v.Decision.From) }) {
				v.Listed = append(v.Listed, l)
			}
		}
	}
	return v, nil
}

func (c *Console) reviewPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.reviewView(r, r.PathValue("id"))
	if err == ErrNoReview {
		c.fail(w, http.StatusNotFound, "No such review request", "It may have expired (they are kept 90 days).")
		return
	}
	if err != nil {
		c.oops(w, r, "read the review", err)
		return
	}
	c.show(w, r, http.StatusOK, "reviews", "Review "+v.Review.ID, "console_review.html", v)
}

// reviewAct answers a review, or acts on its decision: release its held
// message, take its sender off a block list, or put it on the allow list.
func (c *Console) reviewAct(w http.ResponseWriter, r *http.Request) {
	id, admin, f := r.PathValue("id"), sess(r).admin, r.PostForm
	v, err := c.reviewView(r, id)
	if err == ErrNoReview {
		c.fail(w, http.StatusNotFound, "No such review request", "It may have expired (they are kept 90 days).")
		return
	}
	if err != nil {
		c.oops(w, r, "read the review", err)
		return
	}
	back := "/reviews/" + url.PathEscape(id)
	switch f.Get("op") {
	case "answer":
		text := strings.TrimSpace(f.Get("answer"))
		if text == "" || len(text) > 8000 {
			c.fail(w, http.StatusBadRequest, "No answer", "Write an answer of at most 8000 characters.")
			return
		}
		if _, err := c.opts.Relay.AnswerReview(r.Context(), id, text); err != nil {
			c.oops(w, r, "answer the review", err)
			return
		}
		c.opts.Log.Info("console: review answered", "admin", admin, "review", id, "decision", v.Review.Decision)
		done(w, r, back, "Answer saved.")
	case "release":
		if v.Held == nil {
			c.fail(w, http.StatusNotFound, "Nothing held", "The decision's message is not in the holding area.")
			return
		}
		if err := c.opts.Relay.Release(r.Context(), v.Held.ID); err != nil {
			c.oops(w, r, "release the message", err)
			return
		}
		c.opts.Log.Info("console: hold released", "admin", admin, "id", v.Held.ID, "review", id)
		done(w, r, back, "Message "+v.Held.ID+" released for delivery.")
	case "unlist":
		l := f.Get("list")
		if v.Decision == nil || !slices.Contains(v.Listed, l) {
			c.fail(w, http.StatusNotFound, "Not on that list", "The sender is not on that list.")
			return
		}
		if _, err := c.opts.Relay.ListRemove(r.Context(), l, v.Decision.From); err != nil {
			c.oops(w, r, "change the list", err)
			return
		}
		c.opts.Log.Info("console: list removed", "admin", admin, "list", l, "key", v.Decision.From, "review", id)
		done(w, r, back, v.Decision.From+" removed from "+l+".")
	case "allow":
		if v.Decision == nil || v.Decision.From == "" {
			c.fail(w, http.StatusBadRequest, "No sender", "The decision has no sender address to allow.")
			return
		}
		e := store.Entry{List: c.opts.AllowList, Key: v.Decision.From, Reason: "review " + id, Source: "console: " + admin, Added: c.opts.Now()}
		if err := c.opts.Relay.ListAdd(r.Context(), e); err != nil {
			c.oops(w, r, "change the list", err)
			return
		}
		c.opts.Log.Info("console: list added", "admin", admin, "list", e.List, "key", e.Key, "review", id)
		done(w, r, back, v.Decision.From+" added to "+e.List+".")
	default:
		c.fail(w, http.StatusBadRequest, "Request not understood", "Unknown action.")
	}
}

func (c *Console) holdPage(w http.ResponseWriter, r *http.Request) {
	held, err := c.opts.Relay.Held(r.Context())
	if err != nil {
		c.oops(w, r, "read the holding area", err)
		return
	}
	c.show(w, r, http.StatusOK, "hold", "Holding area", "console_hold.html", held)
}

// did says what a hold action did, for the notice and the log.
func did(op string) string {
	if op == "spam" {
		return "deleted as spam"
	}
	return op + "d"
}

// holdAct releases, deletes, or deletes as spam the checked messages;
// the relay learns the inbound ones it releases as ham and those deleted
// as spam as spam.
func (c *Console) holdAct(w http.ResponseWriter, r *http.Request) {
	op, ids, admin := r.PostForm.Get("op"), r.PostForm["id"], sess(r).admin
	if op != "release" && op != "delete" && op != "spam" {
		c.fail(w, http.StatusBadRequest, "Request not understood", "Unknown action.")
		return
	}
	if len(ids) == 0 {
		done(w, r, "/hold", "No message was selected.")
		return
	}
	var n int
	var failed []string
	for _, id := range ids {
		var err error
		switch op {
		case "release":
			err = c.opts.Relay.Release(r.Context(), id)
		case "spam":
			err = c.opts.Relay.DeleteHeldAsSpam(r.Context(), id)
		default:
			err = c.opts.Relay.DeleteHeld(r.Context(), id)
		}
		if err != nil {
			c.opts.Log.Warn("console: hold "+op, "admin", admin, "id", id, "err", err.Error())
			failed = append(failed, id)
			continue
		}
		n++
		c.opts.Log.Info("console: hold "+did(op), "admin", admin, "id", id)
	}
	msg := did(op) + ": " + strconv.Itoa(n)
	if failed != nil {
		msg += "; failed: " + strings.Join(failed, ", ")
	}
	done(w, r, "/hold", strings.ToUpper(msg[:1])+msg[1:]+".")
}

type listsView struct {
	Names   []string
	Name    string
	Entries []store.Entry
}

func (c *Console) listsPage(w http.ResponseWriter, r *http.Request) {
	v := listsView{Names: c.opts.Relay.ListNames(), Name: strings.TrimSpace(r.URL.Query().Get("name"))}
	if v.Name == "" && len(v.Names) > 0 {
		v.Name = v.Names[0]
	}
	if v.Name != "" {
		var err error
		if v.Entries, err = c.opts.Relay.ListEntries(r.Context(), v.Name); err != nil {
			c.oops(w, r, "read the list", err)
			return
		}
	}
	c.show(w, r, http.StatusOK, "lists", "Lists", "console_lists.html", v)
}

func (c *Console) listsAct(w http.ResponseWriter, r *http.Request) {
	f, admin := r.PostForm, sess(r).admin
	list, key := strings.TrimSpace(f.Get("list")), strings.TrimSpace(f.Get("key"))
	if list == "" || key == "" || len(list) > 128 || len(key) > 512 {
		c.fail(w, http.StatusBadRequest, "Missing list or key", "Give a list name and a key.")
		return
	}
	back := "/lists?name=" + url.QueryEscape(list)
	switch f.Get("op") {
	case "add":
		e := store.Entry{List: list, Key: key, Reason: strings.TrimSpace(f.Get("reason")), Source: "console: " + admin, Added: c.opts.Now()}
		if err := c.opts.Relay.ListAdd(r.Context(), e); err != nil {
			c.oops(w, r, "change the list", err)
			return
		}
		c.opts.Log.Info("console: list added", "admin", admin, "list", list, "key", key)
		done(w, r, back, key+" added.")
	case "remove":
		ok, err := c.opts.Relay.ListRemove(r.Context(), list, key)
		if err != nil {
			c.oops(w, r, "change the list", err)
			return
		}
		c.opts.Log.Info("console: list removed", "admin", admin, "list", list, "key", key, "was_there", ok)
		done(w, r, back, key+" removed.")
	default:
		c.fail(w, http.StatusBadRequest, "Request not understood", "Unknown action.")
	}
}

type decisionView struct {
	ID       string
	Decision *Decision
}

func (c *Console) decisionPage(w http.ResponseWriter, r *http.Request) {
	v := decisionView{ID: strings.TrimSpace(r.URL.Query().Get("id"))}
	code := http.StatusOK
	if v.ID != "" {
		var err error
		if v.Decision, err = c.opts.Relay.Decision(r.Context(), v.ID); err != nil {
			c.oops(w, r, "read the decision", err)
			return
		}
		if v.Decision == nil {
			code = http.StatusNotFound
		}
	}
	c.show(w, r, code, "decision", "Decision", "console_decision.html", v)
}

func (c *Console) rulesPage(w http.ResponseWriter, r *http.Request) {
	c.show(w, r, http.StatusOK, "rules", "Rules", "console_rules.html", c.opts.Relay.RulesStatus())
}

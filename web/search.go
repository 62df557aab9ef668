package web

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DecisionSummary is a decision as the search lists it: what the index
// of recent decisions keeps (no message content).
type DecisionSummary struct {
	ID         string
	At         time.Time
	From       string // envelope sender
	HeaderFrom string // the From header's address, once DATA was read
	Rcpts      []string
	Phase      string
	Action     string
	Code       int
	Rule       string   // the rule that decided
	Rules      []string // every rule that fired
	User, IP   string
}

// DecisionQuery is a search of the recent decisions. Every field given
// must match: ID exactly, Sender and Rcpt and Client as parts of an
// address (case-insensitive), Rule as the deciding or any fired rule,
// Action exactly; From and To bound the time (zero: open).
type DecisionQuery struct {
	ID, Sender, Rcpt, Rule, Action, Client string
	From, To                               time.Time
}

// Empty reports whether the query asks for nothing in particular.
func (q DecisionQuery) Empty() bool { return q == DecisionQuery{} }

// Match reports whether d answers the query.
func (q DecisionQuery) Match(d DecisionSummary) bool {
	has := func(s, part string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(part)) }
	switch {
	case q.ID != "" && !strings.EqualFold(d.ID, q.ID),
		q.Action != "" && !strings.EqualFold(d.Action, q.Action),
		q.Sender != "" && !has(d.From, q.Sender) && !has(d.HeaderFrom, q.Sender),
		q.Rcpt != "" && !slices.ContainsFunc(d.Rcpts, func(r string) bool { return has(r, q.Rcpt) }),
		q.Rule != "" && !strings.EqualFold(d.Rule, q.Rule) && !slices.ContainsFunc(d.Rules, func(r string) bool { return strings.EqualFold(r, q.Rule) }),
		q.Client != "" && !has(d.IP, q.Client) && !strings.EqualFold(d.User, q.Client),
		!q.From.IsZero() && d.At.Before(q.From),
		!q.To.IsZero() && d.At.After(q.To):
		return false
	}
	return true
}

// searchPage is how many decisions one page of results lists.
const searchPage = 50

// timeForm is how the search form's times read (datetime-local, UTC).
const timeForm = "2006-01-02T15:04"

type searchView struct {
	Q                      DecisionQuery
	FromText, ToText       string
	Problem                string
	Searched               bool
	Results                []DecisionSummary
	Page                   int
	PrevURL, NextURL       string
	Actions                []string
	KeptDays, IndexEntries int
}

// searchPage lists the recent decisions that match the form, newest
// first, a page at a time. A read: a GET form, no CSRF token.
func (c *Console) searchPage(w http.ResponseWriter, r *http.Request) {
	f := r.URL.Query()
	get := func(k string) string {
		v := strings.TrimSpace(f.Get(k))
		if len(v) > 512 {
			v = v[:512]
		}
		return v
	}
	v := searchView{Q: DecisionQuery{ID: get("id"), Sender: get("sender"), Rcpt: get("rcpt"), Rule: get("rule"),
		Action: get("action"), Client: get("client")}, FromText: get("from"), ToText: get("to"),
		Actions: []string{"accept", "tag", "hold", "tempfail", "reject"}}
	for _, t := range []struct {
		text string
		at   *time.Time
		end  bool
	}{{v.FromText, &v.Q.From, false}, {v.ToText, &v.Q.To, true}} {
		if t.text == "" {
			continue
		}
		at, err := time.Parse(timeForm, t.text)
		if err != nil {
			v.Problem = "Times read like 2026-11-23T10:00 (UTC)."
			c.show(w, r, http.StatusBadRequest, "search", "Search decisions", "console_search.html", v)
			return
		}
		if t.end {
			at = at.Add(time.Minute - time.Nanosecond) // the whole minute named
		}
		*t.at = at
	}
	v.Page, _ = strconv.Atoi(f.Get("page"))
	v.Page = max(1, min(v.Page, 10000))
	v.Searched = len(f) > 0
	if v.Searched {
		res, more, err := c.opts.Relay.SearchDecisions(r.Context(), v.Q, (v.Page-1)*searchPage, searchPage)
		if err != nil {
			c.oops(w, r, "search the decisions", err)
			return
		}
		v.Results = res
		link := func(page int) string {
			q := url.Values{}
			for _, k := range []string{"id", "sender", "rcpt", "rule", "action", "client", "from", "to"} {
				if s := get(k); s != "" {
					q.Set(k, s)
				}
			}
			q.Set("page", strconv.Itoa(page))
			return "/search?" + q.Encode()
		}
		if v.Page > 1 {
			v.PrevURL = link(v.Page - 1)
		}
		if more {
			v.NextURL = link(v.Page + 1)
		}
	}
	c.show(w, r, http.StatusOK, "search", "Search decisions", "console_search.html", v)
}

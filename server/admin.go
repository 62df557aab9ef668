package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/web"
)

// AdminSocket is where the relay answers the CLI (`sluice list`) while it
// holds the embedded store: a Unix socket in the state directory, mode
// 0600, so only its owner can reach it.
func AdminSocket(c *Config) string { return filepath.Join(c.StateDir, "admin.sock") }

// serveAdmin serves the list API on the admin socket until ctx ends.
func (s *Server) serveAdmin(ctx context.Context) error {
	path := AdminSocket(s.cfg.Load())
	os.Remove(path) // a stale socket of a killed relay
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /lists/{name}", func(w http.ResponseWriter, r *http.Request) {
		es, err := s.store.ListEntries(r.Context(), r.PathValue("name"), s.opts.Now())
		reply(w, es, err)
	})
	mux.HandleFunc("GET /lists/{name}/{key}", func(w http.ResponseWriter, r *http.Request) {
		e, err := s.store.ListGet(r.Context(), r.PathValue("name"), r.PathValue("key"), s.opts.Now())
		if err == nil && e == nil {
			http.Error(w, "not on the list", http.StatusNotFound)
			return
		}
		reply(w, e, err)
	})
	mux.HandleFunc("PUT /lists/{name}/{key}", func(w http.ResponseWriter, r *http.Request) {
		var e store.Entry
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e.List, e.Key = r.PathValue("name"), r.PathValue("key")
		if e.Added.IsZero() {
			e.Added = s.opts.Now()
		}
		err := s.store.ListAdd(r.Context(), e)
		if err == nil {
			s.log.Info("list: added", "list", e.List, "key", e.Key, "reason", e.Reason, "source", e.Source)
		}
		reply(w, e, err)
	})
	mux.HandleFunc("DELETE /lists/{name}/{key}", func(w http.ResponseWriter, r *http.Request) {
		ok, err := s.store.ListRemove(r.Context(), r.PathValue("name"), r.PathValue("key"))
		if err == nil && !ok {
			http.Error(w, "not on the list", http.StatusNotFound)
			return
		}
		if err == nil {
			s.log.Info("list: removed", "list", r.PathValue("name"), "key", r.PathValue("key"))
		}
		reply(w, map[string]bool{"removed": ok}, err)
	})
	mux.HandleFunc("GET /decisions/{id}", func(w http.ResponseWriter, r *http.Request) {
		b, err := s.store.Get(r.Context(), "decision", r.PathValue("id"))
		if err == nil && b == nil {
			http.Error(w, "no such decision (kept 30 days)", http.StatusNotFound)
			return
		}
		reply(w, json.RawMessage(b), err)
	})
	mux.HandleFunc("GET /reviews", func(w http.ResponseWriter, r *http.Request) {
		rvs, err := web.ListReviews(r.Context(), s.store, s.opts.Now())
		reply(w, rvs, err)
	})
	mux.HandleFunc("GET /reviews/{id}", func(w http.ResponseWriter, r *http.Request) {
		rv, err := web.GetReview(r.Context(), s.store, r.PathValue("id"))
		replyReview(w, rv, err)
	})
	mux.HandleFunc("POST /reviews/{id}/answer", func(w http.ResponseWriter, r *http.Request) {
		var a struct{ Text string }
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rv, err := web.AnswerReview(r.Context(), s.store, r.PathValue("id"), a.Text, s.opts.Now())
		if err == nil {
			s.log.Info("review answered", "review", rv.ID, "decision", rv.Decision)
		}
		replyReview(w, rv, err)
	})
	// The holding area goes through the relay too, so that a release is
	// delivered at once and the operator sees the state the relay has.
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		ids, err := s.spool.List(queue.AreaHold)
		envs := []*queue.Envelope{}
		for _, id := range ids {
			if e, err := s.spool.Envelope(queue.AreaHold, id); err == nil {
				envs = append(envs, e)
			}
		}
		reply(w, envs, err)
	})
	mux.HandleFunc("GET /hold/{id}", func(w http.ResponseWriter, r *http.Request) {
		var h HeldMessage
		var err error
		if h.Envelope, err = s.spool.Envelope(queue.AreaHold, r.PathValue("id")); err == nil {
			h.Message, err = s.spool.Message(queue.AreaHold, r.PathValue("id"))
		}
		replySpool(w, h, err)
	})
	mux.HandleFunc("POST /hold/{id}/release", func(w http.ResponseWriter, r *http.Request) {
		id, now := r.PathValue("id"), s.opts.Now()
		err := s.spool.Release(id, now)
		if err == nil {
			s.delivery.Enqueue(id, now)
			s.log.Info("hold: released", "id", id)
		}
		replySpool(w, map[string]string{"released": id}, err)
	})
	mux.HandleFunc("DELETE /hold/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := s.spool.Remove(queue.AreaHold, r.PathValue("id"))
		if err == nil {
			s.log.Info("hold: deleted", "id", r.PathValue("id"))
		}
		replySpool(w, map[string]string{"deleted": r.PathValue("id")}, err)
	})
	s.queueRoutes(mux)     // sluice queue: queueadmin.go
	s.adminClassifier(mux) // sluice learn: classifier.go
	// Profiles of the running relay, for its owner only (the socket is 0600).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/heap", pprof.Index)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
		os.Remove(path)
	}()
	go srv.Serve(ln)
	return nil
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, store.ErrUnavailable) {
			code = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// replyReview is reply with web.ErrNoReview as 404.
func replyReview(w http.ResponseWriter, v any, err error) {
	if errors.Is(err, web.ErrNoReview) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	reply(w, v, err)
}

// HeldMessage is a message in the holding area with its envelope.
type HeldMessage struct {
	Envelope *queue.Envelope `json:"envelope"`
	Message  []byte          `json:"message"`
}

// replySpool is reply with ErrNotFound as 404.
func replySpool(w http.ResponseWriter, v any, err error) {
	if errors.Is(err, queue.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	reply(w, v, err)
}

// AdminClient reaches a running relay's list API over its admin socket.
type AdminClient struct {
	c *http.Client
}

// DialAdmin returns a client if a relay answers on the socket.
func DialAdmin(socket string) (*AdminClient, bool) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return nil, false
	}
	conn.Close()
	return &AdminClient{c: c}, true
}

func (a *AdminClient) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sluice"+path, rd)
	if err != nil {
		return 0, err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 404, nil
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, errors.New(string(msg))
	}
	if out != nil {
		return 200, json.NewDecoder(resp.Body).Decode(out)
	}
	return 200, nil
}

func listPath(name, key string) string {
	p := "/lists/" + url.PathEscape(name)
	if key != "" {
		p += "/" + url.PathEscape(key)
	}
	return p
}

func (a *AdminClient) ListAdd(ctx context.Context, e store.Entry) error {
	_, err := a.do(ctx, "PUT", listPath(e.List, e.Key), e, nil)
	return err
}

func (a *AdminClient) ListRemove(ctx context.Context, list, key string) (bool, error) {
	code, err := a.do(ctx, "DELETE", listPath(list, key), nil, nil)
	return code == 200, err
}

func (a *AdminClient) ListGet(ctx context.Context, list, key string, _ time.Time) (*store.Entry, error) {
	var e store.Entry
	code, err := a.do(ctx, "GET", listPath(list, key), nil, &e)
	if code == 404 || err != nil {
		return nil, err
	}
	return &e, nil
}

func (a *AdminClient) ListEntries(ctx context.Context, list string, _ time.Time) ([]store.Entry, error) {
	var es []store.Entry
	_, err := a.do(ctx, "GET", listPath(list, ""), nil, &es)
	return es, err
}

// Decision fetches a decision record from the running relay.
func (a *AdminClient) Decision(ctx context.Context, id string) (*Decision, error) {
	var d Decision
	code, err := a.do(ctx, "GET", "/decisions/"+url.PathEscape(id), nil, &d)
	if code == 404 || err != nil {
		return nil, err
	}
	return &d, nil
}

// Held lists the holding area of the running relay.
func (a *AdminClient) Held(ctx context.Context) ([]*queue.Envelope, error) {
	var es []*queue.Envelope
	_, err := a.do(ctx, "GET", "/hold", nil, &es)
	return es, err
}

// HeldMessage fetches a held message; ErrNotFound if there is none.
func (a *AdminClient) HeldMessage(ctx context.Context, id string) (*HeldMessage, error) {
	var h HeldMessage
	code, err := a.do(ctx, "GET", "/hold/"+url.PathEscape(id), nil, &h)
	if code == 404 {
		return nil, queue.ErrNotFound
	}
	return &h, err
}

// Release has the running relay deliver a held message now.
func (a *AdminClient) Release(ctx context.Context, id string) error {
	code, err := a.do(ctx, "POST", "/hold/"+url.PathEscape(id)+"/release", nil, nil)
	if code == 404 {
		return queue.ErrNotFound
	}
	return err
}

// DeleteHeld deletes a held message.
func (a *AdminClient) DeleteHeld(ctx context.Context, id string) error {
	code, err := a.do(ctx, "DELETE", "/hold/"+url.PathEscape(id), nil, nil)
	if code == 404 {
		return queue.ErrNotFound
	}
	return err
}

// LookupDecision reads a decision record from a store.
func LookupDecision(ctx context.Context, st store.Store, id string) (*Decision, error) {
	b, err := st.Get(ctx, "decision", id)
	if err != nil || b == nil {
		return nil, err
	}
	var d Decision
	return &d, json.Unmarshal(b, &d)
}

// Reviews lists the review requests of report pages.
func (a *AdminClient) Reviews(ctx context.Context) ([]web.Review, error) {
	var rvs []web.Review
	_, err := a.do(ctx, "GET", "/reviews", nil, &rvs)
	return rvs, err
}

// Review fetches a review request; web.ErrNoReview if there is none.
func (a *AdminClient) Review(ctx context.Context, id string) (*web.Review, error) {
	var rv web.Review
	code, err := a.do(ctx, "GET", "/reviews/"+url.PathEscape(id), nil, &rv)
	if code == 404 {
		return nil, web.ErrNoReview
	}
	return &rv, err
}

// AnswerReview records the operator's answer to a review request.
func (a *AdminClient) AnswerReview(ctx context.Context, id, text string) (*web.Review, error) {
	var rv web.Review
	code, err := a.do(ctx, "POST", "/reviews/"+url.PathEscape(id)+"/answer", map[string]string{"text": text}, &rv)
	if code == 404 {
		return nil, web.ErrNoReview
	}
	return &rv, err
}

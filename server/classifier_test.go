package server

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/classify"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/metrics"
	"github.com/sluicemail/sluice/queue"
)

// counts reads what the relay's classifier learned.
func (r *relay) counts(t *testing.T) (ham, spam int) {
	t.Helper()
	ham, spam, err := r.srv.learner.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ham, spam
}

// heldIDs maps the subjects of the held messages to their ids.
func (r *relay) heldIDs(t *testing.T) map[string]string {
	t.Helper()
	ids, err := r.srv.spool.List(queue.AreaHold)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, id := range ids {
		msg, err := r.srv.spool.Message(queue.AreaHold, id)
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`(?m)^Subject: (.*)\r$`).FindSubmatch(msg); m != nil {
			out[string(m[1])] = id
		}
	}
	return out
}

// TestConsoleLearnsHeldMessages: an operator releases one held inbound
// message and deletes another as spam, over the console's real HTTP with
// its session and CSRF token; the relay's classifier learns them as ham and
// spam, without the header fields the relay added; a held outbound message
// deleted as spam is deleted and never learned.
func TestConsoleLearnsHeldMessages(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	hash, err := bcrypt.GenerateFromPassword([]byte("operator pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	admin := freePort(t)
	cfg.Web = WebConfig{AdminListen: admin, Admins: []WebAdmin{{Name: "ops-admin", PasswordHash: string(hash)}}}
	r := startRelay(t, cfg, testRules)

	in := r.dial(t, "plain") // 127.0.0.1 is not in relay_networks: mail from outside
	for _, subj := range []string{"[review] wanted", "[review] unwanted"} {
		if _, err := send(in, "sender@remote.test", []string{"bob@local.test"}, message("sender@remote.test", "bob@local.test", subj)); err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
	}
	out := r.dial(t, "submission")
	login(t, out, "ops")
	if _, err := send(out, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "[review] outbound")); err != nil {
		t.Fatal(err)
	}
	held := r.heldIDs(t)
	if len(held) != 3 {
		t.Fatalf("held: %v, want 3 messages", held)
	}
	stamped, _ := r.srv.spool.Message(queue.AreaHold, held["[review] unwanted"])
	if !strings.HasPrefix(string(stamped), "Received: ") || !strings.Contains(string(stamped), "Authentication-Results: relay.test;") {
		t.Fatalf("the held message lacks the relay's fields:\n%s", stamped)
	}

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	base := "http://" + admin
	if resp, err := c.PostForm(base+"/login", url.Values{"name": {"ops-admin"}, "password": {"operator pw"}}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("login: %v %v", err, resp)
	}
	resp, err := c.Get(base + "/hold")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if tok == nil || !strings.Contains(string(page), `value="spam" id="hold-spam"`) {
		t.Fatalf("the hold page has no CSRF token or no delete-as-spam action:\n%s", page)
	}
	act := func(op string, ids ...string) string {
		t.Helper()
		resp, err := c.PostForm(base+"/hold", url.Values{"csrf": {string(tok[1])}, "op": {op}, "id": ids})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d\n%s", op, resp.StatusCode, b)
		}
		return string(b)
	}
	if body := act("release", held["[review] wanted"]); !strings.Contains(body, "Released: 1.") {
		t.Errorf("release notice:\n%s", body)
	}
	if body := act("spam", held["[review] unwanted"], held["[review] outbound"]); !strings.Contains(body, "Deleted as spam: 2.") {
		t.Errorf("delete as spam notice:\n%s", body)
	}
	if left := r.heldIDs(t); len(left) != 0 {
		t.Errorf("still held: %v", left)
	}
	if ham, spam := r.counts(t); ham != 1 || spam != 1 {
		t.Errorf("learned %d ham, %d spam; want 1 and 1 (the outbound message is never learned)", ham, spam)
	}
	// What was learned is the message as its sender wrote it: learned
	// again from the original, it is already known.
	orig := []byte(message("sender@remote.test", "bob@local.test", "[review] unwanted"))
	if res, err := r.srv.learner.Learn(context.Background(), classify.LearnSpam, orig); err != nil || res != classify.Known {
		t.Errorf("the original of the message deleted as spam: %s %v, want known", res, err)
	}
	if got := scrapeMetrics(t, r)["sluice_classifier_learned_total{result=learned,source=console}"]; got != 2 {
		t.Errorf("sluice_classifier_learned_total{source=console,result=learned} = %g, want 2", got)
	}
	k.wait(t, 1, 5*time.Second) // the released message is delivered
}

// TestAutolearn: with autolearn on, inbound mail with a confident score
// (without the classifier's own points) is learned, off the SMTP reply;
// mail in between, mail decided by a rule, and outbound mail are not.
func TestAutolearn(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	on := true
	cfg.Classifier = ClassifierConfig{Autolearn: on}
	r := startRelay(t, cfg, testRules+`
  - allowed: 'mail_from == "friend@remote.test" => accept'
  - classifier: 'spam_probability < 0.6 => +4'
`)
	out := r.dial(t, "submission")
	login(t, out, "ops")
	if _, err := send(out, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "outbound hello")); err != nil {
		t.Fatal(err)
	}
	in := r.dial(t, "plain")
	for _, c := range []struct {
		from, subj string
		refused    bool
	}{
		{"friend@remote.test", "allowlisted hello", false}, // decided by a rule
		{"sender@remote.test", "viagra offer", false},      // 8 + 4: held; 8 without the classifier is not confident
		{"sender@remote.test", "CHEAP VIAGRA NOW", true},   // 15 + 4: rejected, learned as spam
		{"sender@remote.test", "lunch tomorrow", false},    // 0 + 4: accepted; 0 without the classifier, learned as ham
	} {
		_, err := send(in, c.from, []string{"bob@local.test"}, message(c.from, "bob@local.test", c.subj))
		if (err != nil) != c.refused {
			t.Fatalf("%s: %v", c.subj, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ham, spam := r.counts(t)
		if ham == 1 && spam == 1 {
			break
		}
		if time.Now().After(deadline) || ham+spam > 2 {
			t.Fatalf("learned %d ham and %d spam, want 1 and 1", ham, spam)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The queue is worked in order: what was queued before the last one is
	// done; nothing else was learned.
	if got := scrapeMetrics(t, r)["sluice_classifier_learned_total{result=learned,source=autolearn}"]; got != 2 {
		t.Errorf("sluice_classifier_learned_total{source=autolearn,result=learned} = %g, want 2", got)
	}
	orig := []byte(message("sender@remote.test", "bob@local.test", "lunch tomorrow"))
	if res, _ := r.srv.learner.Learn(context.Background(), classify.LearnHam, orig); res != classify.Known {
		t.Errorf("the ham autolearned is %s, want known", res)
	}
}

// TestAutolearnQueueFull: a full queue drops the message and counts it;
// the SMTP reply never waits for learning.
func TestAutolearnQueueFull(t *testing.T) {
	cfg := &Config{Classifier: ClassifierConfig{Autolearn: true}}
	if err := cfg.Classifier.finish(); err != nil {
		t.Fatal(err)
	}
	s := &Server{metrics: metrics.New()}
	s.cfg.Store(cfg)
	s.auto = s.newAutolearner(1) // never started: nothing takes from the queue
	v := &engine.Verdict{Action: engine.Reject, Score: 20}
	in := &builtins.Input{ClientIP: "192.0.2.1"} // not outbound
	for range 3 {
		s.autolearn(in, v, []byte("Subject: x\r\n\r\nbody\r\n"))
	}
	if n := s.auto.Queued(); n != 1 {
		t.Errorf("queued %d, want 1", n)
	}
	if got := scrapeMetrics(t, &relay{srv: s})["sluice_classifier_learned_total{result=dropped,source=autolearn}"]; got != 2 {
		t.Errorf("dropped %g, want 2", got)
	}
}

// TestScoreWithoutClassifier: the points of rules that read
// spam_probability do not count towards autolearning; shadow rules never
// counted.
func TestScoreWithoutClassifier(t *testing.T) {
	v := &engine.Verdict{Score: 13, Hits: []engine.Hit{
		{Rule: "caps", Score: 7, Evidence: []engine.Evidence{{Name: "subject_caps", Value: true}}},
		{Rule: "cls", Score: 5, Evidence: []engine.Evidence{{Name: "outbound", Value: false}, {Name: "spam_probability", Value: 0.999}, {Name: "spam_tokens", Value: []string{"x"}}}},
		{Rule: "cls-shadow", Score: 3, Shadow: true, Evidence: []engine.Evidence{{Name: "spam_probability", Value: 0.999}}},
		{Rule: "links", Score: 1, Evidence: []engine.Evidence{{Name: "links", Value: []string{}}}},
	}}
	if got := scoreWithoutClassifier(v); got != 8 {
		t.Errorf("score without the classifier = %g, want 8", got)
	}
}

// TestUnstamp: the relay's own fields come off a held message, the
// sender's stay, down to the same Received from another host.
func TestUnstamp(t *testing.T) {
	orig := "Received: from a.example by b.example (sluice) with ESMTP; Mon, 23 Nov 2026 10:00:00 +0000\r\n" +
		"Authentication-Results: other.example; spf=pass\r\nFrom: a@b.example\r\nSubject: hi\r\n\r\nX-Spam-Flag: YES in the body stays\r\n"
	stamped := "Received: from mx.example (unknown [192.0.2.1])\r\n\tby relay.test (sluice) with ESMTP id 01X; Mon, 23 Nov 2026 10:00:01 +0000\r\n" +
		"Authentication-Results: relay.test; spf=none;\r\n\tdkim=none\r\nX-Spam-Flag: YES\r\nX-Spam-Score: 9\r\nX-Spam-Status: Yes, score=9 required=5 rules=caps id=01X\r\n" + orig
	if got := string(unstamp([]byte(stamped), "relay.test")); got != orig {
		t.Errorf("unstamp:\n%q\nwant\n%q", got, orig)
	}
	if got := string(unstamp([]byte(orig), "relay.test")); got != orig {
		t.Errorf("unstamp of a message the relay did not stamp changed it:\n%q", got)
	}
}

// TestClassifierConfig: autolearn is off by default with SpamAssassin's
// thresholds; thresholds that cross, or a negative queue, are refused.
func TestClassifierConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(yaml string) (*Config, error) {
		p := filepath.Join(dir, "sluice.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p)
	}
	c, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	if cl := c.Classifier; cl.Autolearn || *cl.AutolearnSpamScore != 12 || *cl.AutolearnHamScore != 0.1 || cl.AutolearnQueue != 100 {
		t.Errorf("defaults: %+v", cl)
	}
	c, err = load("classifier: {autolearn: true, autolearn_spam_score: 10, autolearn_ham_score: 0, autolearn_queue: 5}\n")
	if err != nil {
		t.Fatal(err)
	}
	if cl := c.Classifier; !cl.Autolearn || *cl.AutolearnSpamScore != 10 || *cl.AutolearnHamScore != 0 || cl.AutolearnQueue != 5 {
		t.Errorf("given: %+v", cl)
	}
	for yaml, want := range map[string]string{
		"classifier: {autolearn_spam_score: 1, autolearn_ham_score: 2}\n": "autolearn_ham_score 2 must be below autolearn_spam_score 1",
		"classifier: {autolearn_queue: -1}\n":                             "classifier.autolearn_queue",
		"classifier: {autolearn: yes please}\n":                           "cannot unmarshal",
	} {
		if _, err := load(yaml); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", yaml, err, want)
		}
	}
}

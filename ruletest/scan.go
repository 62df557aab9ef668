package ruletest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
)

// Found is one message under a path given to `sluice scan` (SPEC 7).
type Found struct {
	// Path is the file: as given, or as found under a given directory.
	Path string
	// Index is the message's position, from 1, in an mbox that holds more
	// than one message; 0 otherwise.
	Index int
	Raw   []byte
}

// Name is PATH, or PATH:N for a message of a multi-message mbox.
func (f *Found) Name() string {
	if f.Index == 0 {
		return f.Path
	}
	return fmt.Sprintf("%s:%d", f.Path, f.Index)
}

// Messages yields, in order, every message under path: a message file; a
// directory, recursively, in name order (symbolic links followed, hidden
// files and directories skipped, except a Maildir++ folder such as .Sent;
// in a Maildir only cur/ and new/ and its folders, since tmp/ holds
// deliveries in progress and the root the server's own files); or an mbox
// (first line starts with "From "), split into its messages. Messages are
// read one at a time. A path that cannot be read is yielded with its error,
// and the walk goes on.
func Messages(path string) iter.Seq2[Found, error] {
	return func(yield func(Found, error) bool) {
		st, err := os.Stat(path)
		switch {
		case err != nil:
			yield(Found{Path: path}, err)
		case st.IsDir():
			walkDir(path, map[string]bool{}, yield)
		default:
			readMessages(path, yield)
		}
	}
}

// walkDir reads dir; ancestors holds the real paths of the directories
// being walked, so a symbolic link back up the tree is not followed round.
func walkDir(dir string, ancestors map[string]bool, yield func(Found, error) bool) bool {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return yield(Found{Path: dir}, err)
	}
	if ancestors[real] {
		return true
	}
	ancestors[real] = true
	defer delete(ancestors, real)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return yield(Found{Path: dir}, err)
	}
	maildir := isMaildir(dir)
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil {
			if !yield(Found{Path: p}, err) {
				return false
			}
			continue
		}
		hidden := strings.HasPrefix(name, ".")
		switch {
		case st.IsDir():
			if (maildir && name == "tmp") || (hidden && !isMaildir(p)) {
				continue
			}
			if !walkDir(p, ancestors, yield) {
				return false
			}
		case st.Mode().IsRegular():
			if hidden || maildir {
				continue
			}
			if !readMessages(p, yield) {
				return false
			}
		}
	}
	return true
}

// isMaildir reports whether dir has the cur/ and new/ of a Maildir.
func isMaildir(dir string) bool {
	for _, sub := range []string{"cur", "new"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

var fromLine = []byte("From ")

// readMessages yields the message in file path, or each message of an mbox.
func readMessages(path string, yield func(Found, error) bool) bool {
	f, err := os.Open(path)
	if err != nil {
		return yield(Found{Path: path}, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	if head, _ := r.Peek(len(fromLine)); !bytes.Equal(head, fromLine) {
		raw, err := io.ReadAll(r)
		if err != nil {
			return yield(Found{Path: path}, fmt.Errorf("%s: %w", path, err))
		}
		return yield(Found{Path: path, Raw: raw}, nil)
	}
	mr := &mboxReader{r: r}
	if err := mr.skipLine(); err != nil {
		return yield(Found{Path: path}, fmt.Errorf("%s: %w", path, err))
	}
	// One message of look-ahead tells whether the mbox holds more than one,
	// and so whether its messages are named with :N.
	cur, more, err := mr.next()
	if err != nil {
		return yield(Found{Path: path}, fmt.Errorf("%s: %w", path, err))
	}
	if !more {
		return yield(Found{Path: path, Raw: cur}, nil)
	}
	for i := 1; ; i++ {
		var nxt []byte
		var nmore bool
		if more {
			nxt, nmore, err = mr.next()
			if err != nil {
				return yield(Found{Path: path}, fmt.Errorf("%s: message %d: %w", path, i+1, err))
			}
		}
		if !yield(Found{Path: path, Index: i, Raw: cur}, nil) {
			return false
		}
		if !more {
			return true
		}
		cur, more = nxt, nmore
	}
}

// mboxReader splits an mbox into messages. A message ends at a line that
// starts with "From " after an empty line (the empty line, which mbox
// writers add between messages, is not part of the message). Lines of the
// form ">From ", ">>From ", ... lose one ">", which reads mboxrd exactly and
// mboxo as well as it can be read.
type mboxReader struct {
	r *bufio.Reader
}

// skipLine discards the rest of the current line.
func (m *mboxReader) skipLine() error {
	for {
		_, err := m.r.ReadSlice('\n')
		switch err {
		case nil, io.EOF:
			return nil
		case bufio.ErrBufferFull:
			continue
		default:
			return err
		}
	}
}

// next returns the next message, its "From " line already consumed, and
// whether another message follows it.
func (m *mboxReader) next() (msg []byte, more bool, err error) {
	atStart, prevBlank, blankLen := true, false, 0
	for {
		chunk, err := m.r.ReadSlice('\n')
		if atStart && prevBlank && bytes.HasPrefix(chunk, fromLine) {
			if err == bufio.ErrBufferFull {
				if err := m.skipLine(); err != nil {
					return nil, false, err
				}
			}
			return msg[:len(msg)-blankLen], true, nil
		}
		if atStart && len(chunk) > 0 && chunk[0] == '>' {
			if q := bytes.TrimLeft(chunk, ">"); bytes.HasPrefix(q, fromLine) {
				chunk = chunk[1:]
			}
		}
		switch err {
		case nil:
			msg = append(msg, chunk...)
			atStart = true
			prevBlank = len(bytes.TrimRight(chunk, "\r\n")) == 0
			blankLen = len(chunk)
		case bufio.ErrBufferFull:
			msg = append(msg, chunk...)
			atStart, prevBlank = false, false
		case io.EOF:
			if len(chunk) == 0 && prevBlank {
				return msg[:len(msg)-blankLen], false, nil
			}
			return append(msg, chunk...), false, nil
		default:
			return nil, false, err
		}
	}
}

// ReceiptTime is when a message was received, for facts about its Date
// (SPEC 7): the time of its newest Received field, the topmost one that
// carries a valid date (RFC 5321 4.4: each hop prepends its own), else now.
// It is what the facts use when the context gives no received_at.
func ReceiptTime(raw []byte, now time.Time) time.Time {
	h, _ := builtins.ParseHeader(raw)
	return builtins.ReceiptTime(h, now)
}

// Judge evaluates one message as `sluice explain` does: the context with
// its defaults, then the rules as the relay applies them. Its receipt time
// is the context's received_at, else SPEC 7's (ReceiptTime), which the
// facts work out from the header they parse anyway.
func (c *Context) Judge(ctx context.Context, rs *engine.RuleSet, raw []byte) (*engine.Verdict, error) {
	in, env, err := c.Input(rs.Registry(), raw)
	if err != nil {
		return nil, err
	}
	return rs.Replay(ctx, in, env), nil
}

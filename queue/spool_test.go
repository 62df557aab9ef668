package queue

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSpoolRecover(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(area, id string) {
		if err := sp.Put(area, &Envelope{ID: id, From: "a@b.test", Received: time.Now()}, []byte("Subject: "+id+"\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	put(AreaQueue, "OK1")
	put(AreaHold, "MOVED")
	// A crash mid-write: content without envelope, a temporary file.
	os.WriteFile(filepath.Join(dir, AreaQueue, "HALF.msg"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "tmp", "OK2.msg.123"), []byte("x"), 0o644)
	// A crash mid-move from hold to queue: the content moved, the envelope not.
	os.Rename(filepath.Join(dir, AreaHold, "MOVED.msg"), filepath.Join(dir, AreaQueue, "MOVED.msg"))
	// A crash in the middle of writing an envelope.
	os.WriteFile(filepath.Join(dir, AreaQueue, "TORN.msg"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, AreaQueue, "TORN.env"), []byte(`{"id": "TO`), 0o644)
	// An envelope written before a crash, its content not.
	os.WriteFile(filepath.Join(dir, AreaQueue, "SHORT.msg"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, AreaQueue, "SHORT.env"), []byte(`{"id": "SHORT", "size": 120}`), 0o644)
	// An envelope whose content is gone for good.
	os.WriteFile(filepath.Join(dir, AreaQueue, "LOST.env"), []byte("{}"), 0o644)

	did, err := sp.Recover()
	if err != nil {
		t.Fatal(err)
	}
	if len(did) != 6 {
		t.Errorf("recovery did %q", did)
	}
	if ids, _ := sp.List(AreaQueue); len(ids) != 1 || ids[0] != "OK1" {
		t.Errorf("queue after recovery: %v", ids)
	}
	if m, err := sp.Message(AreaHold, "MOVED"); err != nil || string(m) != "Subject: MOVED\r\n\r\n" {
		t.Errorf("interrupted move not undone: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, AreaQueue, "HALF.msg")); err == nil {
		t.Error("unacknowledged content kept")
	}
	if _, err := os.Stat(filepath.Join(dir, AreaQueue, "LOST.env.broken")); err != nil {
		t.Error("envelope without content not set aside")
	}
	if _, err := sp.Envelope(AreaQueue, "../etc/passwd"); err != ErrNotFound {
		t.Errorf("a path as id: %v", err)
	}
}

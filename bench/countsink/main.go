// Command countsink is the next hop of bench/postfix.sh: an SMTP sink on
// loopback that accepts every message, like Postfix's smtp-sink, and also
// counts them by the queue id of the relay that passed them on (the "id"
// of the topmost Received field), so that a run can show sent = received
// with no message lost and none delivered twice.
//
//	countsink -addr 127.0.0.1:2600 -stats 127.0.0.1:2601
//
// GET /stats on the stats address answers one JSON object: received (all
// messages), unique (distinct relay ids), duplicates, noid (messages
// without a relay id) and the times of the first and last message; POST
// /reset starts a new count.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

type counter struct {
	mu          sync.Mutex
	received    int
	duplicates  int
	noid        int
	seen        map[string]struct{}
	first, last time.Time
}

type stats struct {
	Received   int     `json:"received"`
	Unique     int     `json:"unique"`
	Duplicates int     `json:"duplicates"`
	NoID       int     `json:"noid"`
	First      float64 `json:"first"` // Unix seconds, 0 before the first message
	Last       float64 `json:"last"`
}

func (c *counter) add(id string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received++
	if c.first.IsZero() {
		c.first = now
	}
	c.last = now
	switch _, dup := c.seen[id]; {
	case id == "":
		c.noid++
	case dup:
		c.duplicates++
	default:
		c.seen[id] = struct{}{}
	}
}

func (c *counter) snapshot() stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := stats{Received: c.received, Unique: len(c.seen), Duplicates: c.duplicates, NoID: c.noid}
	if !c.first.IsZero() {
		s.First = float64(c.first.UnixNano()) / 1e9
		s.Last = float64(c.last.UnixNano()) / 1e9
	}
	return s
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received, c.duplicates, c.noid = 0, 0, 0
	c.seen = map[string]struct{}{}
	c.first, c.last = time.Time{}, time.Time{}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:2600", "SMTP listen address")
	statsAddr := flag.String("stats", "127.0.0.1:2601", "HTTP address of /stats and /reset")
	flag.Parse()
	c := &counter{seen: map[string]struct{}{}}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(c.snapshot())
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		c.reset()
	})
	go func() { log.Fatal(http.ListenAndServe(*statsAddr, mux)) }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(conn, c)
	}
}

// serve speaks just enough SMTP for a relay's client: EHLO with
// PIPELINING (replies are flushed only when no pipelined command is
// waiting), MAIL, RCPT, DATA, RSET, NOOP, QUIT.
func serve(conn net.Conn, c *counter) {
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64<<10)
	w := bufio.NewWriter(conn)
	w.WriteString("220 countsink ESMTP\r\n")
	w.Flush()
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(string(bytes.TrimSpace(line)))
		verb, _, _ := strings.Cut(cmd, " ")
		switch verb {
		case "EHLO":
			w.WriteString("250-countsink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n")
		case "HELO":
			w.WriteString("250 countsink\r\n")
		case "MAIL", "RCPT", "RSET", "NOOP":
			w.WriteString("250 2.0.0 ok\r\n")
		case "DATA":
			w.WriteString("354 go ahead\r\n")
			w.Flush()
			id, err := readData(r)
			if err != nil {
				return
			}
			c.add(id)
			w.WriteString("250 2.0.0 ok\r\n")
		case "QUIT":
			w.WriteString("221 2.0.0 bye\r\n")
			w.Flush()
			return
		default:
			w.WriteString("502 5.5.2 not here\r\n")
		}
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

// readData reads a message up to its lone dot and returns the id of its
// first Received field ("... with ESMTP id 4XyZ..." in Postfix's and
// sluice's), folded continuation lines included.
func readData(r *bufio.Reader) (string, error) {
	var id string
	inHeader, inReceived, done := true, false, false
	var received []byte
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: the rest is body; keep reading.
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			inHeader = false
			continue
		}
		if err != nil {
			return "", err
		}
		if len(line) == 3 && line[0] == '.' || bytes.Equal(line, []byte(".\n")) {
			if id == "" && received != nil {
				id = receivedID(received)
			}
			return id, nil
		}
		if !inHeader || done {
			continue
		}
		switch {
		case len(bytes.TrimRight(line, "\r\n")) == 0:
			inHeader = false
		case inReceived && (line[0] == ' ' || line[0] == '\t'):
			received = append(received, line...)
		case inReceived:
			inReceived, done = false, true
			id = receivedID(received)
		case len(line) > 9 && strings.EqualFold(string(line[:9]), "received:"):
			inReceived = true
			received = append(received[:0], line...)
		}
	}
}

func receivedID(field []byte) string {
	f := strings.Fields(strings.ReplaceAll(string(field), ";", " ; "))
	for i := 0; i+1 < len(f); i++ {
		if strings.EqualFold(f[i], "id") {
			return f[i+1]
		}
	}
	return ""
}

// Package storetest runs a real redis-server for tests: on 127.0.0.1, on a
// free port, in a temporary directory, without persistence; stopped at the
// end of the test. It can be stopped and started again mid-test to prove
// the relay's behaviour when Redis goes away.
package storetest

import (
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"
)

// RedisServer is a redis-server process.
type RedisServer struct {
	Addr string
	dir  string
	cmd  *exec.Cmd
	t    testing.TB
}

// StartRedis starts redis-server; the test fails if it is not installed
// (`make test` installs it).
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &RedisServer{Addr: addr, dir: t.TempDir(), t: t}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server (again) on the same address.
func (r *RedisServer) Start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			buf := make([]byte, 16)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server did not start on %s", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server.
func (r *RedisServer) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

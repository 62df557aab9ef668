package main

import (
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestSlow"}`,
		`{"Action":"output","Package":"p","Test":"TestSlow","Output":"quiet\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestSlow","Elapsed":31.5}`,
		`{"Action":"output","Package":"p","Test":"TestBad","Output":"x_test.go:9: boom\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBad","Elapsed":0.1}`,
		`{"Action":"fail","Package":"p","Elapsed":32}`,
		`# p [build failed]`,
	}, "\n")
	var out strings.Builder
	if rc := run(strings.NewReader(in), &out, 20*time.Second); rc != 1 {
		t.Errorf("exit %d, want 1", rc)
	}
	got := out.String()
	for _, want := range []string{"x_test.go:9: boom", "FAIL p\t32.0s", "31.5s  p TestSlow", "# p [build failed]"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "quiet") {
		t.Errorf("a passing test's output was printed:\n%s", got)
	}
	out.Reset()
	if rc := run(strings.NewReader(`{"Action":"pass","Package":"p","Elapsed":1}`), &out, time.Second); rc != 0 {
		t.Errorf("all passed: exit %d", rc)
	}
	if rc := run(strings.NewReader(""), &out, time.Second); rc != 1 {
		t.Errorf("no events: exit %d, want 1", rc)
	}
}

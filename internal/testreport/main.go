// Command testreport reads `go test -json` on stdin and prints what a
// person watching `make test` needs: each package's result as it ends, the
// whole output of every failed test, and the tests that took 20 s or more,
// so a slow CI run says which test was slow. It exits 1 if anything failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type slowTest struct {
	name    string
	elapsed float64
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout, 20*time.Second))
}

func run(in io.Reader, out io.Writer, slowAfter time.Duration) int {
	outputs := map[string]*strings.Builder{} // package/test -> output
	var slow []slowTest
	failed, events := false, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			// Not an event: go test prints build errors this way.
			fmt.Fprintln(out, sc.Text())
			continue
		}
		events++
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(e.Output)
		case "pass", "skip", "fail":
			if e.Action == "fail" {
				failed = true
				if b := outputs[key]; b != nil {
					fmt.Fprint(out, b.String())
				}
			}
			if e.Test == "" {
				fmt.Fprintf(out, "%-4s %s\t%.1fs\n", strings.ToUpper(e.Action), e.Package, e.Elapsed)
			} else if e.Elapsed >= slowAfter.Seconds() {
				slow = append(slow, slowTest{e.Package + " " + e.Test, e.Elapsed})
			}
			delete(outputs, key)
		}
	}
	if len(slow) > 0 {
		sort.Slice(slow, func(i, j int) bool { return slow[i].elapsed > slow[j].elapsed })
		fmt.Fprintf(out, "tests that took %v or more:\n", slowAfter)
		for _, s := range slow {
			fmt.Fprintf(out, "  %6.1fs  %s\n", s.elapsed, s.name)
		}
	}
	if failed || events == 0 {
		return 1
	}
	return 0
}

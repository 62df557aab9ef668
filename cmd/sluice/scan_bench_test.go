package main

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/sluicemail/sluice/ruletest"
)

// BenchmarkScan judges examples/fixtures/messages with the shipped rules
// on 1 and 2 workers, reading the files each time as scan does.
func BenchmarkScan(b *testing.B) {
	rs, ok := loadRules("../../rules.d", io.Discard)
	if !ok {
		b.Fatal("rules.d does not load")
	}
	srcs := []scanSource{{path: "../../examples/fixtures/messages"}}
	var c ruletest.Context
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				for j := range scanAll(context.Background(), rs, &c, srcs, workers) {
					if j.err != nil {
						b.Fatal(j.err)
					}
					n++
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

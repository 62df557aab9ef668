package smtp

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/textproto"
	"testing"
)

// dotEncode writes msg in chunks of the given sizes (cycled) through w and
// closes it.
func dotEncode(t testing.TB, msg []byte, chunks []int, w func(*bufio.Writer) interface {
	Write([]byte) (int, error)
	Close() error
}) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := w(bw)
	for i := 0; len(msg) > 0; i++ {
		n := chunks[i%len(chunks)]
		if n < 1 {
			n = 1
		}
		if n > len(msg) {
			n = len(msg)
		}
		if m, err := dw.Write(msg[:n]); m != n || err != nil {
			t.Fatalf("Write: %d of %d, %v", m, n, err)
		}
		msg = msg[n:]
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func ours(bw *bufio.Writer) interface {
	Write([]byte) (int, error)
	Close() error
} {
	return &dotWriter{bw: bw}
}

func theirs(bw *bufio.Writer) interface {
	Write([]byte) (int, error)
	Close() error
} {
	return textproto.NewWriter(bw).DotWriter()
}

// checkSame: the fast dot writer's output is textproto's, byte for byte.
func checkSame(t testing.TB, msg []byte, chunks []int) {
	want := dotEncode(t, msg, chunks, theirs)
	got := dotEncode(t, msg, chunks, ours)
	if !bytes.Equal(got, want) {
		t.Fatalf("input %q in chunks %v:\n got %q\nwant %q", msg, chunks, got, want)
	}
}

func TestDotWriterAsTextproto(t *testing.T) {
	cases := []string{
		"", ".", "..", "\r", "\n", "\r\n", "\r\r\n", "\r.\n", "\n.", "a\r\n.b\r\n",
		".\r\n", "x\n.\n..\n", "line\rdot\r.\r\n", "a\r", "a\n", "end without newline",
		"Subject: x\r\n\r\n.hidden\r\n..double\r\n.\r\n",
	}
	for _, c := range cases {
		for _, chunks := range [][]int{{1 << 20}, {1}, {2}, {3, 1}} {
			checkSame(t, []byte(c), chunks)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab.\r\n")
	for k := 0; k < 5000; k++ {
		msg := make([]byte, r.IntN(64))
		for i := range msg {
			msg[i] = alphabet[r.IntN(len(alphabet))]
		}
		checkSame(t, msg, []int{1 + r.IntN(8), 1 + r.IntN(8)})
	}
}

func FuzzDotWriter(f *testing.F) {
	f.Add([]byte("a\r\n.b\r\n"), uint8(3))
	f.Add([]byte("\r\r\n.\n"), uint8(1))
	f.Fuzz(func(t *testing.T, msg []byte, chunk uint8) {
		checkSame(t, msg, []int{int(chunk) + 1})
	})
}

// BenchmarkDotWriter: a 100 KB message of 78-octet lines.
func BenchmarkDotWriter(b *testing.B) {
	var msg []byte
	for len(msg) < 100<<10 {
		msg = append(msg, bytes.Repeat([]byte("x"), 76)...)
		msg = append(msg, "\r\n"...)
	}
	for _, w := range []struct {
		name string
		w    func(*bufio.Writer) interface {
			Write([]byte) (int, error)
			Close() error
		}
	}{{"textproto", theirs}, {"fast", ours}} {
		b.Run(w.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			bw := bufio.NewWriter(discard{})
			for i := 0; i < b.N; i++ {
				dw := w.w(bw)
				dw.Write(msg)
				dw.Close()
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

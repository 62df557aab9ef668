package smtp

import (
	"bufio"
	"bytes"
	"io"
	"math/rand"
	"strings"
	"testing"
	"testing/iotest"
)

// TestDataReaderFastPath reads random messages of dots, CRs, LFs and
// letters through the DATA reader twice: from a full buffer, where the
// middle of a line is copied in bulk, and one byte at a time, where it
// goes through the state machine byte by byte. Both must give the same
// bytes and the same end.
func TestDataReaderFastPath(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte(".\r\nab")
	read := func(src io.Reader, chunk int) ([]byte, error) {
		r := &dataReader{r: bufio.NewReaderSize(src, 16)}
		var out []byte
		buf := make([]byte, chunk)
		for {
			n, err := r.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				return out, err
			}
		}
	}
	for i := 0; i < 20000; i++ {
		msg := make([]byte, rng.Intn(120))
		for j := range msg {
			msg[j] = alphabet[rng.Intn(len(alphabet))]
		}
		if rng.Intn(2) == 0 {
			msg = append(msg, "\r\n.\r\n"...)
		}
		chunk := 1 + rng.Intn(40)
		fast, ferr := read(bytes.NewReader(msg), chunk)
		slow, serr := read(iotest.OneByteReader(bytes.NewReader(msg)), chunk)
		if !bytes.Equal(fast, slow) || ferr != serr {
			t.Fatalf("%q in chunks of %d: bulk %q (%v), byte by byte %q (%v)", msg, chunk, fast, ferr, slow, serr)
		}
	}
}

// BenchmarkDataReader reads a 10 KB message of 80-column lines, some
// dot-stuffed, through the DATA reader.
func BenchmarkDataReader(b *testing.B) {
	var msg strings.Builder
	for msg.Len() < 10240 {
		msg.WriteString("Thank you for your order. Your items will be shipped within two business days.\r\n..a stuffed dot\r\n")
	}
	msg.WriteString(".\r\n")
	raw := msg.String()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	sr := strings.NewReader(raw)
	br := bufio.NewReader(sr)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		sr.Reset(raw)
		br.Reset(sr)
		r := &dataReader{r: br}
		n, err := io.ReadFull(r, buf)
		if err != io.ErrUnexpectedEOF || n != len(raw)-3-strings.Count(raw, "\r\n..") {
			b.Fatalf("read %d bytes, %v", n, err)
		}
	}
}

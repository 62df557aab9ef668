package queue

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A segment is an append-only file of records, seg/NNNNNNNNNNNNNNNN.seg,
// numbered in the order they were made. A record is
//
//	u32 length of the body | u32 CRC-32C of the body | body
//
// and its body is
//
//	kind | area | id length | id | u32 envelope length | envelope (JSON) | content
//
// where content is only in a put. Replaying every record of every segment
// in order rebuilds the index; a record whose checksum fails ends its
// segment's replay (a write a crash cut short: never acknowledged, see
// the package doc).
const (
	recPut = 'P' // a new message: its envelope and content
	recEnv = 'E' // a message's envelope now, and the area it is in
	recDel = 'D' // the message is gone

	headerLen = 8
	maxBody   = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var areaCodes = map[string]byte{AreaQueue: 'q', AreaHold: 'h'}

func areaName(c byte) (string, bool) {
	for a, ac := range areaCodes {
		if ac == c {
			return a, true
		}
	}
	return "", false
}

// record is one decoded record; data is only read for puts.
type record struct {
	kind    byte
	area    string
	id      string
	env     []byte
	dataOff int64 // offset of the content in the segment
	dataLen int
	size    int64 // the whole record, header included
}

// encodeHead returns the header and body of a record up to its content,
// the content being written after it as it is (no copy).
func encodeHead(kind byte, area, id string, env, data []byte) []byte {
	bodyLen := 3 + len(id) + 4 + len(env) + len(data)
	b := make([]byte, headerLen, headerLen+3+len(id)+4+len(env))
	binary.LittleEndian.PutUint32(b[0:4], uint32(bodyLen))
	b = append(b, kind, areaCodes[area], byte(len(id)))
	b = append(b, id...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(env)))
	b = append(b, env...)
	crc := crc32.Update(crc32.Checksum(b[headerLen:], castagnoli), castagnoli, data)
	binary.LittleEndian.PutUint32(b[4:8], crc)
	return b
}

type segment struct {
	seq  uint64
	f    *os.File
	size int64 // bytes written (or found valid, for a segment replayed)
	live int64 // bytes of the puts of the messages whose content is here
}

func segName(seq uint64) string { return fmt.Sprintf("%016d.seg", seq) }

// segmentSeqs lists the segments in dir, oldest first.
func segmentSeqs(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".seg"); ok {
			if seq, err := strconv.ParseUint(n, 10, 64); err == nil {
				seqs = append(seqs, seq)
			}
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// errTorn is a record that is cut short or fails its checksum.
var errTorn = errors.New("torn record")

// replay reads the records of f in order, calling fn for each; it returns
// the length of the valid prefix and errTorn if something follows it.
func replay(f *os.File, fn func(*record)) (int64, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 256<<10)
	var off int64
	var hdr [headerLen]byte
	var buf []byte // reused: fn keeps only the envelope, copied
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return off, nil
			}
			if err == io.ErrUnexpectedEOF {
				return off, errTorn
			}
			return off, err
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		if n < 3+4 || n > maxBody {
			return off, errTorn
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		body := buf[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return off, errTorn
			}
			return off, err
		}
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return off, errTorn
		}
		rec, ok := decodeBody(body, off)
		if !ok {
			return off, errTorn
		}
		fn(rec)
		off += rec.size
	}
}

// decodeBody decodes a record body that passed its checksum, found at off.
func decodeBody(b []byte, off int64) (*record, bool) {
	rec := &record{kind: b[0], size: headerLen + int64(len(b))}
	area, ok := areaName(b[1])
	idLen := int(b[2])
	if !ok || len(b) < 3+idLen+4 {
		return nil, false
	}
	rec.area, rec.id = area, string(b[3:3+idLen])
	p := 3 + idLen
	envLen := int(binary.LittleEndian.Uint32(b[p:]))
	p += 4
	if envLen > len(b)-p {
		return nil, false
	}
	rec.env = append([]byte(nil), b[p:p+envLen]...)
	p += envLen
	switch rec.kind {
	case recPut:
		rec.dataOff, rec.dataLen = off+headerLen+int64(p), len(b)-p
	case recEnv, recDel:
		if p != len(b) {
			return nil, false
		}
	default:
		return nil, false
	}
	return rec, validID(rec.id)
}

// pwrite writes head then data at off, all or an error.
func pwrite(f *os.File, off int64, head, data []byte) error {
	want := len(head) + len(data)
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var werr error
	if err := rc.Control(func(fd uintptr) {
		n, werr = unix.Pwritev(int(fd), [][]byte{head, data}, off)
	}); err != nil {
		return err
	}
	if werr == nil && n != want {
		werr = fmt.Errorf("short write: %d of %d bytes", n, want)
	}
	return werr
}

// datasync is fdatasync(2): the file's data and the size that reaches it,
// not its other metadata (times), which nothing here needs.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}

func syncDir(dir string) error {
	// unix.Open, not os.Open: os would try to add the folder to the
	// netpoller (fcntl, and an epoll_ctl that fails), two system calls
	// of five for each sync.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	err = unix.Fsync(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("spool: fsync %s: %w", dir, err)
	}
	return nil
}

func segPath(dir string, seq uint64) string { return filepath.Join(dir, segName(seq)) }

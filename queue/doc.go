// Package queue is the relay's durable spool (messages, envelopes, the queue and the holding
// area, crash recovery) and their delivery: retries, pooled SMTP sessions, local folders, bounces.
//
// # Layout
//
// A spool directory holds a lock file and seg/, a series of append-only
// segment files numbered in order. Every change is a record appended to
// the newest segment (segment.go gives the format): a put (envelope and
// content of a new message, in an area), an envelope (a message's new
// envelope and the area it is in now: Update, Move, Release) or a
// removal. Each record carries a CRC-32C. The index, every message's
// area, latest envelope and the place of its content, lives in memory and
// is rebuilt at open by replaying the segments in order; a record that is
// cut short or fails its checksum ends its segment's replay (a crash cut
// it while it was written: it was never acknowledged, see below).
//
// # Why segments
//
// The spool it replaces wrote each message as two files (ID.msg, ID.env)
// through tmp/ and a rename, and unlinked both after delivery. Under load
// the relay's CPU profile was 40-50% openat, unlinkat and ext4 inode
// allocation: two inodes, four directory entries and their journal
// updates per message. An append is one pwritev into the page cache, with
// no inode, no directory entry and no journal record of its own; a
// segment's file is created once per 64 MiB.
//
// # Why fdatasync of the segment, not syncfs
//
// A 250 needs exactly this: the message's bytes and the file size that
// reaches them on disk. fdatasync(2) of the segment flushes that and
// nothing else. syncfs(2), which the old spool shared between sessions,
// flushes every dirty page of the whole file system (the store's files,
// logs, local delivery folders, any other program's writes), so its cost
// is set by others; and with one file per message it had to carry the
// renames' metadata too. A new segment's name is made durable once
// (fsync of seg/) before any record in it is acknowledged, and a segment
// is fdatasynced when it is sealed, so a sync of the newest segment covers
// every record before it.
//
// # Group commit, and its window
//
// A Put appends its record (under the spool's mutex, so records never
// interleave) and then waits until a sync covers it. The first waiter
// that finds no sync running becomes the syncer: it notes how many records
// are appended, fdatasyncs, and wakes every writer those cover; writers
// that appended meanwhile are covered by the next sync, made by one of
// them. There is no timer: a lone writer pays one fdatasync and waits no
// longer; under load the batch is whatever arrived during the previous
// sync, so it grows with the load by itself. A fixed window was measured
// (a sleep before the syncer notes its target; 1 KB, 2000 puts, noisy):
// with 100 us, 500 us and 2 ms, one writer fell from 638 to 302, 371 and
// 211 commits/s and 16 writers from 15,284 to 6,110, 9,168 and 3,624; only
// 64 writers gained (15,658 to 20,753, 35,263, 18,571). The relay's
// sessions are not all committing at once, so no window.
//
// # What is synced before returning
//
// Put, Update, Move, Release and Discard return once their record is on
// disk. Update is synced because it carries each recipient's status: a
// lost "delivered" would send to that recipient again. Remove is not
// waited for: its record reaches the disk with the next group commit, or
// within a second (the background flush). Waiting would make every
// delivery worker wait a sync per message, and what a lost removal costs
// is bounded: a killed process loses nothing (the record is in the kernel's
// page cache once Remove returns), and a power cut within that second
// brings the message back to be delivered again, a duplicate, never a
// loss; the old spool did not sync removals either.
//
// # Compaction
//
// Segments are deleted oldest first and whole (compact.go): the oldest
// sealed segment goes once nothing in it is live, or, when less than half
// of it is live (or the spool's files exceed twice the live data plus two
// segments), after its live messages are copied as new puts into the
// newest segment and that copy is synced; then the file is unlinked and
// seg/ fsynced. Oldest first is what makes deletion safe: a removal or an
// envelope record is never older than its message's put, so it lives as
// long as the put it overrides and a removed message never comes back. A
// crash at any step leaves the old segment with none, part or all of the
// copies (replay takes a later put of an id as the same message) or the
// copies alone. With the relay's traffic, delivered within seconds, old
// segments are all dead and are deleted without copying.
//
// A segment's size is an option (SegmentBytes; the relay's
// spool.segment_bytes). Compaction runs in the background, where no
// caller hears of it: its steps and failures go to the Logger. The
// server's TestKillDuringCompaction kills the relay with SIGKILL as
// compactions start, on 16 KiB segments, and finds every acknowledged
// message delivered.
//
// # Local delivery does not pass through the spool
//
// With delivery mode local the recipients' folders are the message's
// durable home: Deliverer.DeliverNow writes each file (an unnamed
// O_TMPFILE file, or a temporary name where there is none, linked into
// place once its data is on disk, then one fsync per folder, by group
// commit) before the relay answers 250, and the message is never spooled
// unless a folder fails, when it is spooled with the recipients still
// pending and retried like any other. A put, its share of a sync, a
// removal and an attempt per message were 12-15% of the relay's CPU in
// local runs of bench/postfix.sh.
//
// The 250 waits for one journal commit, as the spool's does. On a journal
// that logs metadata in order (ext4 with a journal, XFS: orderedJournal)
// the file's write-back is waited for (sync_file_range) before its link,
// so the folder's fsync commits name, size and blocks together and a
// crash never shows a name without its content. Elsewhere each file is
// fdatasynced before its link, a commit more. 10 sessions, 10 KB, a fresh
// journaled ext4: 440-680 msg/s with an fdatasync per file after the link
// (each one, after the folder's commit, flushes the disk cache again),
// 730-840 with two commits in a row, 935-955 with one; through the
// spool it was 520-600.
//
// The waits are plain system calls. A goroutine in fsync keeps its P, and
// Go's sysmon, once it takes a P back (or wakes to find the process busy
// again after all its Ps were idle, as a relay waiting on the disk is
// many times a second), polls every 20 µs for the next 50 ticks: 14% of a
// core in local runs on a 2-core VM. Waiting through io_uring instead (an
// eventfd in the netpoller, the syncs on the kernel's workers) halved
// sysmon's sleeps on an unjournaled disk but did not pay on the journaled
// one: 10 sessions, 10 KB, 5 pairs against the plain calls, 0.83x the
// messages per second at 1.08x the CPU (medians); 100 KB, 1.09x at 0.98x.
// It was not kept.
//
// # The holding area, Move and other processes
//
// An area is a field of the index; Move and Release are one envelope
// record, so after a crash a message is in one area, never in both or
// neither. The spool is one process's at a time: OpenSpool takes an
// flock(2) on the lock file (the kernel drops it when the holder dies)
// and, if another process keeps it for more than 3 s, fails with
// ErrLocked. The relay keeps it while it runs, and operator commands go
// through its admin socket then; while no relay runs they open the spool
// for each call and Close it, so a relay starting meanwhile waits at most
// for that call. Spools of earlier versions (ID.msg and ID.env in queue/
// and hold/) are put in order and moved into the segments at open
// (legacy.go).
//
// # Figures
//
// BenchmarkSpool (bench_test.go): a durable Put then Remove per message, W
// concurrent writers, fsync on, ext4 on a virtual disk of a 2-core VM
// shared with other jobs, so noisy: medians of 3 runs of 2000 messages,
// old and new alternating, with their range. "write" is the bytes the
// process dirtied per message (/proc/self/io write_bytes, page-granular,
// journal not included); CPU is user+system per message.
//
//	            commits/s                             CPU us/msg   write B/msg
//	            files+syncfs      segments            old   new     old     new
//	1KB   w1      270 (136-274)       702 (694-855)      860   188   37224    5382
//	1KB   w16     631 (551-1092)     6644 (5825-10033)   697    56   23818    1780
//	1KB   w64     898 (764-1310)    20755 (7514-22032)   456    30   18229    1436
//	10KB  w1      268 (238-366)       443 (329-520)      634   277   43698   14746
//	10KB  w16     939 (760-1028)     7000 (4463-7675)    459    72   31115   11000
//	10KB  w64    1055 (456-1095)     9688 (9080-10164)   466    48   25960   10615
//	100KB w1      258 (218-261)       280 (242-371)      827   417  139112  106875
//	100KB w16     659 (643-799)      2152 (1848-2760)    595   158  124262  104145
//	100KB w64     650 (616-661)      3071 (2125-3927)    594   152  119548  104780
//
// One writer is bound by the disk's sync latency either way; with 16 and 64
// writers the segments commit 3-23x more messages per second at 1/4 to
// 1/15 of the CPU, and dirty the message's own pages instead of two
// files' pages plus their inodes and directories. A 1 KB record still
// dirties a 4 KB page per commit (the page the next record shares is
// written again by the next sync).
//
// Through the whole relay (server's BenchmarkRelay: 10 KB, 50 clients,
// default rules, local delivery, fsync on; 3000 messages, two pairs on
// the same loaded machine): 143 and 204 msgs/s with the per-file spool,
// 309 and 320 with segments.
package queue

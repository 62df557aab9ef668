package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sluicemail/sluice/server"
	"github.com/sluicemail/sluice/store"
)

// cmdServe runs the relay until SIGTERM or SIGINT; SIGHUP reloads the rules
// and the config.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	config := fs.String("config", "", "config `FILE` (default: $SLUICE_CONFIG, else the embedded default)")
	rules := fs.String("rules", "", "rules directory (overrides the config's rules_dir)")
	if _, err := parseArgs(fs, args); err != nil {
		return 2
	}
	path := configFile(*config)
	cfg, err := server.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, "sluice serve:", err)
		return 1
	}
	// The embedded store admits one process, and two relays on one spool
	// would deliver every message twice: a relay that answers on the
	// state's admin socket owns it.
	if _, ok := server.DialAdmin(server.AdminSocket(cfg)); ok {
		fmt.Fprintf(stderr, "sluice serve: another relay holds the state in %s (it answers on %s); stop it first, or give this one its own state_dir\n", abs(cfg.StateDir), server.AdminSocket(cfg))
		return 1
	}
	if *rules != "" {
		cfg.RulesDir = *rules
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	tuneGC()
	// The state holds envelopes and addresses: whatever the relay or a
	// library creates in it is for the relay's user alone.
	syscall.Umask(0o077)
	if narrowed, err := store.MakePrivateDir(cfg.StateDir); err != nil {
		fmt.Fprintln(stderr, "sluice serve:", err)
		return 1
	} else if narrowed {
		log.Warn("the state directory was open to other users; now mode 0700", "dir", abs(cfg.StateDir))
	}
	srv, err := server.New(cfg, path, server.Options{Log: log})
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(stderr, "sluice serve: another relay holds the state in %s: %v\n", abs(cfg.StateDir), err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice serve:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ls, err := srv.Start(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "sluice serve:", err)
		return 1
	}
	for _, l := range ls {
		fmt.Fprintf(stdout, "sluice: listening on %s (%s)\n", l.Addr, l.Mode)
	}
	rs := srv.Rules().Current()
	fmt.Fprintf(stdout, "sluice: %d rules from %s, reloaded on change\n", len(rs.Rules()), cfg.RulesDir)
	fmt.Fprintf(stdout, "sluice: state in %s (sluice hold, queue, list and decision reach it with the same config)\n", abs(cfg.StateDir))
	fmt.Fprintf(stdout, "sluice: spool in %s\n", abs(filepath.Join(cfg.StateDir, "spool")))
	switch cfg.Delivery.Mode {
	case "local":
		fmt.Fprintf(stdout, "sluice: delivering into %s (one folder per recipient)\n", abs(cfg.Delivery.LocalDir))
	case "smarthost":
		fmt.Fprintf(stdout, "sluice: delivering through the smarthost %s\n", cfg.Delivery.Smarthost.Addr)
	case "mx":
		fmt.Fprintln(stdout, "sluice: delivering to each recipient domain's MX")
	}
	if path == "" {
		fmt.Fprintln(stdout, "sluice: embedded default: relaying for loopback clients without AUTH; try: swaks --server 127.0.0.1:2525 --from you@example.com --to bob@example.org")
	}
	go func() {
		if err := srv.Rules().Watch(ctx, 200*time.Millisecond, 5*time.Second); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("rules watch stopped", "err", err)
		}
	}()
	go srv.WatchConfig(ctx, 2*time.Second)

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for s := range sig {
		if s == syscall.SIGHUP {
			if _, err := srv.Rules().Reload("SIGHUP"); err != nil {
				log.Error("rules reload rejected; the live rules stay", "err", err.Error())
			}
			srv.ReloadConfig()
			continue
		}
		log.Info("shutting down", "signal", s.String(), "grace", cfg.Limits.ShutdownGrace.D().String())
		sctx, scancel := context.WithTimeout(context.Background(), cfg.Limits.ShutdownGrace.D())
		err := srv.Shutdown(sctx)
		scancel()
		if err != nil {
			log.Warn("shutdown", "err", err.Error())
		}
		return 0
	}
	return 0
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// cmdHold manages the holding area.
func cmdHold(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hold", stderr)
	config := fs.String("config", "", "config `FILE` (default: $SLUICE_CONFIG, else the embedded default)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "usage: sluice hold list|show ID|release ID...|delete ID... [--config FILE]")
		return 2
	}
	rs, ok := openRelayState("hold", *config, stderr)
	if !ok {
		return 1
	}
	area, err := rs.hold()
	if err != nil {
		fmt.Fprintln(stderr, "sluice hold:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch pos[0] {
	case "list":
		envs, err := area.Held(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "sluice hold:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRECEIVED\tUSER\tFROM\tRCPTS\tSCORE\tRULES")
		for _, e := range envs {
			var rc []string
			for _, r := range e.Rcpts {
				rc = append(rc, r.Addr)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t<%s>\t%s\t%g\t%s\n", e.ID, e.Received.Format(time.RFC3339), dash(e.User), e.From, strings.Join(rc, ","), e.Score, strings.Join(e.Rules, ","))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d held\n", len(envs))
		return 0
	case "show":
		if len(pos) != 2 {
			fmt.Fprintln(stderr, "usage: sluice hold show ID")
			return 2
		}
		h, err := area.HeldMessage(ctx, pos[1])
		if err != nil {
			fmt.Fprintf(stderr, "sluice hold: %s: %v\n", pos[1], err)
			return 1
		}
		e := h.Envelope
		fmt.Fprintf(stdout, "id:       %s\nreceived: %s\nuser:     %s\nclient:   %s (helo %s)\nfrom:     <%s>\n", e.ID, e.Received.Format(time.RFC3339), dash(e.User), e.ClientIP, e.Helo, e.From)
		for _, r := range e.Rcpts {
			fmt.Fprintf(stdout, "to:       <%s>\n", r.Addr)
		}
		fmt.Fprintf(stdout, "score:    %g\nrules:    %s\nreason:   %s\n\n", e.Score, strings.Join(e.Rules, ", "), e.Reason)
		stdout.Write(h.Message)
		return 0
	case "release", "delete":
		if len(pos) < 2 {
			fmt.Fprintf(stderr, "usage: sluice hold %s ID...\n", pos[0])
			return 2
		}
		code := 0
		for _, id := range pos[1:] {
			var err error
			verb := "released for delivery"
			if pos[0] == "release" {
				err = area.Release(ctx, id)
			} else {
				err = area.DeleteHeld(ctx, id)
				verb = "deleted"
			}
			if err != nil {
				fmt.Fprintf(stderr, "sluice hold %s: %s: %v\n", pos[0], id, err)
				code = 1
				continue
			}
			fmt.Fprintf(stdout, "%s %s\n", id, verb)
		}
		return code
	}
	fmt.Fprintf(stderr, "sluice hold: unknown subcommand %q\n", pos[0])
	return 2
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdPasswd reads a password on stdin and prints its bcrypt hash for the
// config file's password_hash.
func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: sluice passwd < password   (the password is read from stdin, never from arguments)")
		return 2
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "sluice passwd:", err)
		return 1
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(stderr, "sluice passwd: empty password")
		return 1
	}
	h, err := server.HashPassword(pw)
	if err != nil {
		fmt.Fprintln(stderr, "sluice passwd:", err)
		return 1
	}
	fmt.Fprintln(stdout, h)
	return 0
}

// tuneGC sets the collector for a relay, unless GOGC or GOMEMLIMIT in the
// environment say otherwise. A relay's live heap is small (a few MB: the
// rules, the spool's index, open sessions) while every message allocates
// about twice its size (its parsed text, the copy that is queued), so at
// Go's default GOGC=100 a 100 KB message stream ran a collection every
// ~15 messages: 8-11% of the relay's CPU was marking (bench/postfix.sh
// profiles). GOGC=400 measured 6-10% less CPU per message (bench/delivery.sh
// smarthost, 10 clients, 100 KB: 1.64-1.77 -> 1.54-1.59 CPU-s per 1,000).
// The soft limit at half the machine's memory keeps a heap that grows for
// real (many huge messages at once) from using 5x its live size.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		var si syscall.Sysinfo_t
		if syscall.Sysinfo(&si) == nil && si.Totalram > 0 {
			debug.SetMemoryLimit(int64(uint64(si.Totalram) * uint64(si.Unit) / 2))
		}
	}
}

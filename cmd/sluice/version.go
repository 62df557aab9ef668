package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// cmdVersion prints what the binary was built from (SPEC 5): the module
// version ("(devel)" for a build of a checkout), the VCS revision and its
// time when the build stamped them, and the Go version.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "sluice version: takes no arguments\n")
		return 2
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(stdout, versionText(bi))
	return 0
}

func versionText(bi *debug.BuildInfo) string {
	version, goVersion := "(devel)", runtime.Version()
	var rev, at, modified string
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
	}
	out := "sluice " + version + "\n"
	if rev != "" {
		out += "revision " + rev + modified + "\n"
	}
	if at != "" {
		out += "commit time " + at + "\n"
	}
	return out + "go " + goVersion + "\n"
}

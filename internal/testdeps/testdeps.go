// Package testdeps decides what a test does when a tool it needs from
// Debian (chromium, python3-dkim, python3-spf) is missing.
package testdeps

import (
	"os"
	"testing"
)

// Missing ends a test whose tool is not installed: it fails under `make
// test` (which installs the tools and sets SLUICE_REQUIRE_DEPS) and in CI,
// where a skipped interop or browser test would hide a missing install
// step, and skips elsewhere (a developer running go test by hand).
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("SLUICE_REQUIRE_DEPS") != "" || os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and this run requires it (make deps installs it)", what)
	}
	t.Skipf("%s is not installed: run `make test`, which installs it", what)
}

//! External programs a test needs (`chromium`, `promtool`, ...): finding
//! them, and skipping loudly, never silently, where one is missing.

use std::path::PathBuf;

/// Comma-separated tools whose absence fails a test instead of skipping it
/// (e.g. `chromium,promtool`). `.ci/run` sets it for what it installs, so a
/// broken install cannot turn into a green run that checked nothing.
pub const REQUIRE_VAR: &str = "SWITCHBOARD_REQUIRE_TOOLS";

/// An executable named `name` on `PATH` (or in `/usr/sbin`, `/sbin`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `tool` is listed in [`REQUIRE_VAR`].
pub fn required(tool: &str) -> bool {
    std::env::var(REQUIRE_VAR)
        .unwrap_or_default()
        .split(',')
        .any(|t| t.trim() == tool)
}

/// Reports that `check` could not run because `tool` is missing: prints a
/// banner (shown by nextest for the test), or panics when `tool` is listed
/// in [`REQUIRE_VAR`].
pub fn skip_missing(tool: &str, check: &str, reason: &str) {
    let msg = format!("SKIPPED CHECK `{check}`: {reason}");
    if required(tool) {
        panic!("{msg}, and {REQUIRE_VAR} lists `{tool}`");
    }
    eprintln!("\n===== {msg} =====\n");
}

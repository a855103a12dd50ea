//! Running the built `qkd` once and reading what it prints, shared by the command-line tests.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
// Each test crate uses the helpers it needs.
#![allow(clippy::expect_used, clippy::panic, dead_code)]

use std::process::{Command, Output};

/// `qkd ARGS…`, run to its end.
pub fn qkd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkd"))
        .args(args)
        .output()
        .expect("the qkd binary runs")
}

/// The one JSON object `qkd ARGS…` prints; the command must succeed.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = qkd(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// The number in `report[name]`; missing or not a number fails the test.
pub fn field(report: &serde_json::Value, name: &str) -> f64 {
    report[name]
        .as_f64()
        .unwrap_or_else(|| panic!("field {name} missing in {report}"))
}

/// `qkd ARGS…` fails with exit code 2, nothing on stdout, and `message` in its error.
pub fn refused(args: &[&str], message: &str) {
    let out = qkd(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: nothing on stdout on error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

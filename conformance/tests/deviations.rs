//! The deviation rows (checked on asyncjob alone) and the report binary's JSON output.

use conformance::deviations::{Check, rows};
use std::path::Path;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_conformance");

#[test]
fn every_deviation_row_holds() {
    let rows = rows(Some(Path::new(EXE)));
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| match &r.check {
            Check::Failed(e) => Some(format!("{}: {e}", r.name)),
            _ => None,
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let checked = rows.iter().filter(|r| r.check == Check::Passed).count();
    assert!(checked >= 10, "only {checked} rows were run");
    for name in [
        "nested_start",
        "stale_handle",
        "foreign_thread",
        "stack_overflow",
        "stack_allocator_lock",
    ] {
        assert!(rows.iter().any(|r| r.name == name), "row {name} missing");
    }
}

#[test]
fn scenarios_subcommand_prints_json() {
    let out = Command::new(EXE)
        .args(["scenarios", "--json"])
        .output()
        .expect("run conformance");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert!(
        v["openssl"]["version"]
            .as_str()
            .is_some_and(|s| s.starts_with("OpenSSL 3."))
    );
    let sc = v["scenarios"].as_array().expect("scenarios array");
    assert!(sc.len() >= 40);
    assert!(
        sc.iter()
            .all(|s| s["verdict"] == "Same" || s["verdict"].get("Skipped").is_some())
    );
    assert_eq!(v["failed"], false);
}

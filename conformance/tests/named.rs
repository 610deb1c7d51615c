//! Every named scenario: OpenSSL's trace must match the reference, and asyncjob's must match OpenSSL.

use conformance::{Verdict, judge, scenarios};

#[test]
fn at_least_40_named_scenarios_with_unique_names() {
    let all = scenarios::all();
    assert!(all.len() >= 40, "only {} scenarios", all.len());
    let mut names: Vec<_> = all.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "duplicate scenario names");
}

#[test]
fn named_scenarios_agree() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for sc in scenarios::all() {
        match judge(&sc).0 {
            Verdict::Same => ran += 1,
            Verdict::Skipped(_) => {}
            v => failures.push(format!("{}: {v:?}", sc.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 40, "only {ran} scenarios ran");
}

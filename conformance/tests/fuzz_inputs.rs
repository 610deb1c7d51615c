//! The fuzz inputs kept in the repository: every seed of `conformance/fuzz/seeds` and every input in
//! `conformance/fuzz/regressions` (minimised findings of the fuzzer) decodes to a program within
//! bounds on which OpenSSL and asyncjob agree. Keeps the seed corpus in step with the decoder.

use conformance::decode::{check_bounds, from_bytes};
use conformance::programs::check;
use std::path::Path;

fn replay(dir: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    entries.sort();
    for p in entries {
        let steps = from_bytes(&std::fs::read(&p).expect("read input"));
        check_bounds(&steps).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if let Some(d) = check(&steps) {
            panic!(
                "{}: step {} `{}`: openssl `{}` vs asyncjob `{}`",
                p.display(),
                d.index,
                d.step,
                d.openssl,
                d.asyncjob
            );
        }
        n += 1;
    }
    n
}

#[test]
fn seed_corpus_agrees() {
    let n = replay("fuzz/seeds");
    assert!(n >= 40, "only {n} seeds");
}

#[test]
fn fuzz_regressions_agree() {
    replay("fuzz/regressions");
}

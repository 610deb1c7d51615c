//! The conformance report.
use conformance::{Verdict, judge, scenarios};

fn main() {
    conformance::ffi::init_openssl();
    println!("{}", conformance::ffi::openssl_version_text());
    let mut bad = 0;
    for sc in scenarios::all() {
        let (v, _, _) = judge(&sc);
        match v {
            Verdict::Same => println!("✓ {}", sc.name),
            Verdict::Skipped(w) => println!("- {} skipped: {w}", sc.name),
            other => {
                bad += 1;
                println!("✗ {} {other:?}", sc.name)
            }
        }
    }
    std::process::exit(i32::from(bad > 0));
}

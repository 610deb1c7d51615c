//! Differential conformance harness: the same ASYNC scenarios run against the real libcrypto
//! (through a hand-written `extern "C"` block; openssl-sys only links it) and against `asyncjob`,
//! and the traces are diffed. Also: generated scenario programs (proptest), the deviation checks for
//! rows where OpenSSL is undefined, and the speed comparison.

pub mod bench;
pub mod decode;
pub mod deviations;
pub mod driver;
pub mod ffi;
pub mod memfns;
pub mod model;
pub mod programs;
pub mod rust_backend;
pub mod scenarios;
pub mod stress;

use model::{Trace, first_difference};
use scenarios::Scenario;
use serde::Serialize;

pub use ffi::Ossl;
pub use rust_backend::Aj;

/// The linked OpenSSL version number (as `OpenSSL_version_num`).
pub fn openssl_version() -> u64 {
    ffi::openssl_version_number()
}

/// Where a scenario's OpenSSL trace departs from what the reference says OpenSSL does.
#[derive(Clone, Debug, Serialize)]
pub struct ExpectationMiss {
    pub index: usize,
    pub step: String,
    pub expected: String,
    pub got: String,
}

/// Checks a trace against a scenario's per-step expectations.
pub fn check_expectations(sc: &Scenario, trace: &Trace) -> Option<ExpectationMiss> {
    for (i, e) in sc.expect.iter().enumerate() {
        let Some(e) = e else { continue };
        let got = trace
            .get(i)
            .map_or_else(|| "(missing)".to_string(), model::StepTrace::line);
        if got != *e {
            let step = sc.steps[i].to_string();
            return Some(ExpectationMiss {
                index: i,
                step,
                expected: (*e).to_string(),
                got,
            });
        }
    }
    None
}

/// The first difference between the OpenSSL and asyncjob traces.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub index: usize,
    pub step: String,
    pub openssl: String,
    pub asyncjob: String,
}

/// Diffs two traces (OpenSSL first).
pub fn diff(openssl: &Trace, asyncjob: &Trace) -> Option<Difference> {
    first_difference(openssl, asyncjob).map(|(index, step, o, a)| Difference {
        index,
        step,
        openssl: o,
        asyncjob: a,
    })
}

/// The outcome of one named scenario.
#[derive(Clone, Debug, Serialize)]
pub enum Verdict {
    Same,
    /// asyncjob differs from OpenSSL.
    Differs(Difference),
    /// OpenSSL itself departs from the reference (a harness or reference problem).
    ReferenceMismatch(ExpectationMiss),
    Skipped(String),
}

/// Runs one named scenario on both backends (each on a fresh thread) and judges it.
pub fn judge(sc: &Scenario) -> (Verdict, Option<Trace>, Option<Trace>) {
    if let Some(why) = sc.gate.skip_reason(openssl_version()) {
        // Rows with no Rust counterpart still validate the harness against the reference.
        if matches!(sc.gate, scenarios::Gate::NotInRust(_)) {
            let o = driver::run_on_new_thread::<Ossl>(&sc.steps);
            if let Some(m) = check_expectations(sc, &o) {
                return (Verdict::ReferenceMismatch(m), Some(o), None);
            }
            return (Verdict::Skipped(why), Some(o), None);
        }
        return (Verdict::Skipped(why), None, None);
    }
    let o = driver::run_on_new_thread::<Ossl>(&sc.steps);
    if let Some(m) = check_expectations(sc, &o) {
        return (Verdict::ReferenceMismatch(m), Some(o), None);
    }
    let a = driver::run_on_new_thread::<Aj>(&sc.steps);
    let v = match diff(&o, &a) {
        None => Verdict::Same,
        Some(d) => Verdict::Differs(d),
    };
    (v, Some(o), Some(a))
}

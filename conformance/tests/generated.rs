//! Random defined-behaviour programs diffed between OpenSSL and asyncjob (1,000 cases, shrinking).

use conformance::programs::{check, program};
use proptest::prelude::*;
use proptest::test_runner::Config;

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    #[test]
    fn random_programs_agree(steps in program()) {
        if let Some(d) = check(&steps) {
            prop_assert!(false, "step {} `{}`: openssl `{}` vs asyncjob `{}`", d.index, d.step, d.openssl, d.asyncjob);
        }
    }
}

//! libFuzzer target: the input bytes decode to a scenario program (`conformance::decode`), which runs
//! on the linked libcrypto and on asyncjob, each on a fresh thread of this process; any difference
//! between the two traces, or any crash or sanitizer report, is a finding.
//!
//! Memory: libcrypto leaks the old pool and its idle jobs (32 KiB stacks) each time
//! `ASYNC_init_thread` replaces a pool, including the one a thread's first `ASYNC_start_job` made.
//! Defined programs do that, so the fuzzer's RSS grows (~150 KiB per run under ASan, all of it
//! allocated by libcrypto; see lsan.supp); `ci/step-52-fuzz.sh` restarts it every minute or 10,000
//! runs.
#![no_main]

use conformance::{decode, ffi, programs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        ffi::init_openssl();
    },
    |data: &[u8]| {
        let steps = decode::from_bytes(data);
        if let Some(d) = programs::check(&steps) {
            let listing: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{i:3}. {s}"))
                .collect();
            panic!(
                "asyncjob differs from OpenSSL at step {} `{}`\n  openssl : {}\n  asyncjob: {}\nprogram:\n{}",
                d.index,
                d.step,
                d.openssl,
                d.asyncjob,
                listing.join("\n")
            );
        }
    }
);

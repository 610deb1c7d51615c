//! Tests of the harness itself: it must catch a backend that is wrong, shrink the program that shows
//! it, and its generator must reach the interesting parts of the API.

use conformance::driver::{self, Backend, Outcome};
use conformance::model::{ArgSpec, CtxOp, Event, Script, StartRc, Step};
use conformance::programs::{fuzz_with, program};
use conformance::{Aj, Ossl, diff, scenarios};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::rc::Rc;

/// asyncjob with one deliberate bug, chosen by `M`.
struct Mutant<const M: u8>;

impl<const M: u8> Backend for Mutant<M> {
    type Job = <Aj as Backend>::Job;
    type Ctx = <Aj as Backend>::Ctx;
    const NAME: &'static str = "mutant";

    fn init_thread(max: usize, init: usize) -> bool {
        Aj::init_thread(max, init)
    }
    fn cleanup_thread() {
        Aj::cleanup_thread();
    }
    fn take_errors() -> Vec<(i32, i32)> {
        Aj::take_errors()
    }
    fn new_ctx() -> Self::Ctx {
        Aj::new_ctx()
    }
    fn free_ctx(ctx: Self::Ctx) {
        Aj::free_ctx(ctx);
    }
    fn ctx_addr(ctx: &Self::Ctx) -> usize {
        Aj::ctx_addr(ctx)
    }
    fn start(ctx: Option<&Self::Ctx>, script: Rc<Script>, args: &ArgSpec) -> Outcome<Self::Job> {
        Aj::start(ctx, script, args)
    }
    fn resume(job: Self::Job, decoy: Option<&Self::Ctx>) -> Outcome<Self::Job> {
        let mut o = Aj::resume(job, decoy);
        if M == 1 && o.rc == StartRc::Finish {
            o.ret += 1;
        }
        o
    }
    fn job_addr(job: &Self::Job) -> usize {
        Aj::job_addr(job)
    }
    fn job_wait_ctx_addr(job: &Self::Job) -> Option<usize> {
        Aj::job_wait_ctx_addr(job)
    }
    fn clobber_args() {}
    fn block_pause() {
        Aj::block_pause();
    }
    fn unblock_pause() {
        Aj::unblock_pause();
    }
    fn pause() -> i32 {
        Aj::pause()
    }
    fn current_job_addr() -> Option<usize> {
        Aj::current_job_addr()
    }
    fn current_wait_ctx_addr() -> Option<usize> {
        Aj::current_wait_ctx_addr()
    }
    fn is_capable() -> bool {
        Aj::is_capable()
    }
    fn ctx_op(ctx: Option<&Self::Ctx>, op: &CtxOp) -> Option<Event> {
        let e = Aj::ctx_op(ctx, op)?;
        Some(match e {
            Event::AllFds(mut v) if M == 0 => {
                v.reverse();
                Event::AllFds(v)
            }
            Event::Clear(_) if M == 2 => Event::Clear(1),
            e => e,
        })
    }
}

fn named_differences<B: Backend>() -> Vec<&'static str> {
    scenarios::all()
        .into_iter()
        .filter(|s| s.gate.skip_reason(conformance::openssl_version()).is_none())
        .filter(|s| {
            let o = driver::run_on_new_thread::<Ossl>(&s.steps);
            let b = driver::run_on_new_thread::<B>(&s.steps);
            diff(&o, &b).is_some()
        })
        .map(|s| s.name)
        .collect()
}

#[test]
fn named_scenarios_catch_each_mutant() {
    assert!(named_differences::<Mutant<0>>().contains(&"all_fds_newest_first"));
    assert!(named_differences::<Mutant<1>>().contains(&"lifo_pool_reuse"));
    assert!(named_differences::<Mutant<2>>().contains(&"clear_unknown_key_returns_0"));
}

fn fuzz_catches<const M: u8>() {
    let found =
        fuzz_with::<Mutant<M>>(1000, 7, |_| {}).expect_err("the fuzzer missed a broken backend");
    assert!(!found.steps.is_empty());
    assert!(
        found.steps.len() <= 10,
        "poorly shrunk: {} steps",
        found.steps.len()
    );
    assert_ne!(found.difference.openssl, found.difference.asyncjob);
}

#[test]
fn fuzzer_catches_reversed_fd_lists() {
    fuzz_catches::<0>();
}

#[test]
fn fuzzer_catches_wrong_return_value() {
    fuzz_catches::<1>();
}

#[test]
fn fuzzer_catches_wrong_clear_result() {
    fuzz_catches::<2>();
}

#[test]
fn generated_programs_reach_the_interesting_cases() {
    let mut runner = TestRunner::deterministic();
    let strategy = program();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let steps: Vec<Step> = strategy.new_tree(&mut runner).expect("tree").current();
        for st in driver::run_on_new_thread::<Ossl>(&steps) {
            for e in st.events {
                let tag = match e {
                    Event::Start {
                        rc: StartRc::Pause, ..
                    } => "pause",
                    Event::Start {
                        rc: StartRc::Finish,
                        ..
                    } => "finish",
                    Event::Start {
                        rc: StartRc::NoJobs,
                        ..
                    } => "no_jobs",
                    Event::Start {
                        rc: StartRc::Err, ..
                    } => "err",
                    Event::Init { ok: false } => "init_rejected",
                    Event::Errors(_) => "error_queue",
                    Event::Cleanup { .. } => "cleanup",
                    Event::Changed { ndel, .. } if ndel > 0 => "deleted_fd",
                    Event::Clear(1) => "clear_ok",
                    Event::Clear(0) => "clear_unknown",
                    Event::Callback(Some(_)) => "callback",
                    Event::Args(Some(_)) => "args",
                    Event::DecoyCalled => "decoy_called",
                    Event::CurrentJob(Some(_)) => "current_job",
                    _ => continue,
                };
                seen.insert(tag);
            }
        }
    }
    for want in [
        "pause",
        "finish",
        "no_jobs",
        "init_rejected",
        "error_queue",
        "cleanup",
        "deleted_fd",
        "clear_ok",
        "clear_unknown",
        "callback",
        "args",
        "current_job",
    ] {
        assert!(
            seen.contains(want),
            "generator never reached {want}; saw {seen:?}"
        );
    }
    assert!(
        !seen.contains("decoy_called"),
        "OpenSSL ran the func passed to a resume"
    );
    assert!(
        !seen.contains("err"),
        "a generated program left OpenSSL's defined behaviour"
    );
}

/// How many of the committed fuzz seeds, decoded, show a difference against backend `B`.
fn seeds_catching<B: Backend>() -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    std::fs::read_dir(dir)
        .expect("seed directory")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read seed"))
        .filter(|bytes| {
            conformance::programs::check_with::<B>(&conformance::decode::from_bytes(bytes))
                .is_some()
        })
        .count()
}

#[test]
fn decoded_fuzz_seeds_catch_each_mutant() {
    // The fuzz target's path (bytes → decode → both backends → diff) sees a broken backend from its
    // seeds alone, before any mutation.
    assert!(seeds_catching::<Mutant<0>>() > 0);
    assert!(seeds_catching::<Mutant<1>>() > 0);
    assert!(seeds_catching::<Mutant<2>>() > 0);
    assert_eq!(seeds_catching::<Aj>(), 0);
}

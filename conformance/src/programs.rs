//! Random scenario programs, generated only inside OpenSSL's defined behaviour: jobs that pause or
//! touch their wait ctx always get one, nothing nests, and the driver's guards skip the rest (freeing
//! a ctx under a paused job, cleanup with paused jobs, resuming an empty slot).

use crate::driver::Backend;
use crate::model::{Action, ArgSpec, CtxOp, Script, Step, Trace};
use crate::{Aj, Difference, Ossl, diff, driver};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

const SLOTS: usize = 5;

/// Mostly ctx 0, so that operations pile up on one context; ctx 2 often does not exist (skipped).
fn ctx_index() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)]
}

fn key() -> impl Strategy<Value = u8> {
    0u8..2
}

fn ctx_op() -> impl Strategy<Value = CtxOp> {
    prop_oneof![
        4 => (key(), 10i32..30, 0u8..4, any::<bool>())
            .prop_map(|(key, fd, data, cleanup)| CtxOp::SetWaitFd { key, fd, data, cleanup }),
        1 => key().prop_map(|key| CtxOp::GetFd { key }),
        2 => Just(CtxOp::AllFds),
        3 => Just(CtxOp::ChangedFds),
        3 => key().prop_map(|key| CtxOp::ClearFd { key }),
        1 => (-2i32..5).prop_map(CtxOp::SetStatus),
        1 => Just(CtxOp::GetStatus),
        1 => (proptest::option::of(0u8..2), 0i32..9).prop_map(|(cb, arg)| CtxOp::SetCallback { cb, arg }),
        1 => Just(CtxOp::GetCallback),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => Just(Action::Pause),
        1 => Just(Action::Block),
        2 => Just(Action::Unblock),
        1 => Just(Action::CurrentJob),
        1 => Just(Action::CurrentWaitCtx),
        4 => ctx_op().prop_map(Action::Ctx),
        1 => Just(Action::ReadArgs),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    (proptest::collection::vec(action(), 0..6), 0i32..100)
        .prop_map(|(actions, ret)| Script { actions, ret })
}

fn args() -> impl Strategy<Value = ArgSpec> {
    prop_oneof![
        3 => Just(ArgSpec::None),
        2 => proptest::collection::vec(any::<u8>(), 1..17).prop_map(ArgSpec::Bytes),
        1 => (1usize..32).prop_map(ArgSpec::NullWithSize),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (prop_oneof![1 => Just(0usize), 4 => 1usize..3, 1 => 3usize..6], 0usize..4)
            .prop_map(|(max, init)| Step::Init { max, init }),
        1 => Just(Step::Cleanup),
        3 => Just(Step::NewCtx),
        1 => ctx_index().prop_map(Step::FreeCtx),
        10 => (0..SLOTS, proptest::option::of(ctx_index()), script(), args())
            .prop_map(|(slot, ctx, script, args)| Step::Start { slot, ctx, script, args }),
        8 => (0..SLOTS, proptest::bool::weighted(0.2)).prop_map(|(slot, decoy)| Step::Resume { slot, decoy }),
        6 => (ctx_index(), ctx_op()).prop_map(|(ctx, op)| Step::Ctx { ctx, op }),
        1 => Just(Step::Block),
        1 => Just(Step::Unblock),
        1 => Just(Step::PauseOutside),
        1 => Just(Step::CurrentJobOutside),
        1 => (0..SLOTS).prop_map(|slot| Step::JobWaitCtx { slot }),
        1 => Just(Step::ClobberArgs),
    ]
}

/// Makes a generated program respect what OpenSSL defines: a job that may pause or use its wait
/// ctx gets one (ctx 0 if it had none; the driver skips the start if that ctx does not exist).
pub fn sanitize(mut steps: Vec<Step>) -> Vec<Step> {
    for s in &mut steps {
        if let Step::Start { ctx, script, .. } = s {
            if ctx.is_none() && script.needs_wait_ctx() {
                *ctx = Some(0);
            }
        }
    }
    steps
}

/// Strategy for a whole (sanitised) scenario program; starts with a couple of contexts so that most
/// starts find one.
pub fn program() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..32).prop_map(|v| {
        let mut steps = vec![Step::NewCtx, Step::NewCtx];
        steps.extend(v);
        sanitize(steps)
    })
}

/// Runs a program on both backends and returns where their traces first differ.
pub fn check(steps: &[Step]) -> Option<Difference> {
    check_with::<Aj>(steps)
}

/// [`check`] against any backend in place of asyncjob (the harness tests use a deliberately
/// broken one).
pub fn check_with<B: Backend>(steps: &[Step]) -> Option<Difference> {
    let o: Trace = driver::run_on_new_thread::<Ossl>(steps);
    let a: Trace = driver::run_on_new_thread::<B>(steps);
    diff(&o, &a)
}

/// A mismatch found by [`fuzz`], after shrinking.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    pub steps: Vec<Step>,
    pub difference: Difference,
}

/// Runs `cases` random programs from `seed`; returns the shrunk program of the first mismatch.
/// `progress` is called after each program run (shrinking runs included).
pub fn fuzz(cases: u32, seed: u64, progress: impl Fn(u64)) -> Result<u64, Found> {
    fuzz_with::<Aj>(cases, seed, progress)
}

/// [`fuzz`] against any backend in place of asyncjob.
pub fn fuzz_with<B: Backend>(cases: u32, seed: u64, progress: impl Fn(u64)) -> Result<u64, Found> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let runs = std::cell::Cell::new(0u64);
    let r = runner.run(&program(), |steps| {
        runs.set(runs.get() + 1);
        progress(runs.get());
        match check_with::<B>(&steps) {
            None => Ok(()),
            Some(d) => Err(TestCaseError::fail(
                serde_json::to_string(&d).unwrap_or_default(),
            )),
        }
    });
    match r {
        Ok(()) => Ok(runs.get()),
        Err(TestError::Fail(_, steps)) => {
            let difference = check_with::<B>(&steps).unwrap_or(Difference {
                index: 0,
                step: String::new(),
                openssl: "(mismatch did not reproduce)".into(),
                asyncjob: String::new(),
            });
            Err(Found { steps, difference })
        }
        Err(TestError::Abort(why)) => Err(Found {
            steps: Vec::new(),
            difference: Difference {
                index: 0,
                step: format!("aborted: {why}"),
                openssl: String::new(),
                asyncjob: String::new(),
            },
        }),
    }
}

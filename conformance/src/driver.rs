//! Runs a scenario on one backend: the generic driver, the generic job-script interpreter, and the
//! per-thread trace recorder that turns addresses into small stable ids.

use crate::model::{Action, ArgSpec, CtxOp, Event, Script, StartRc, Step, StepTrace, Trace};
use std::cell::RefCell;
use std::rc::Rc;

/// The result of one `ASYNC_start_job` call.
#[derive(Debug)]
pub struct Outcome<J> {
    pub rc: StartRc,
    pub ret: i32,
    pub job: Option<J>,
}

/// One implementation of the ASYNC API as seen by the driver. Functions without `self` are the
/// per-thread API; jobs call them from inside, so they cannot borrow the driver.
pub trait Backend: Sized + 'static {
    /// A paused job (owned by the driver's slot).
    type Job;
    /// A wait context owned by the driver.
    type Ctx;
    const NAME: &'static str;

    fn init_thread(max: usize, init: usize) -> bool;
    fn cleanup_thread();
    /// Drains what the last driver step queued as errors: (lib, reason) pairs.
    fn take_errors() -> Vec<(i32, i32)>;
    fn new_ctx() -> Self::Ctx;
    fn free_ctx(ctx: Self::Ctx);
    fn ctx_addr(ctx: &Self::Ctx) -> usize;
    fn start(ctx: Option<&Self::Ctx>, script: Rc<Script>, args: &ArgSpec) -> Outcome<Self::Job>;
    fn resume(job: Self::Job, decoy: Option<&Self::Ctx>) -> Outcome<Self::Job>;
    fn job_addr(job: &Self::Job) -> usize;
    fn job_wait_ctx_addr(job: &Self::Job) -> Option<usize>;
    fn clobber_args();

    fn block_pause();
    fn unblock_pause();
    fn pause() -> i32;
    fn current_job_addr() -> Option<usize>;
    fn current_wait_ctx_addr() -> Option<usize>;
    fn is_capable() -> bool;
    /// Runs `op` on `ctx`, or on the current job's wait ctx when `ctx` is None. Returns None when
    /// there is no such ctx.
    fn ctx_op(ctx: Option<&Self::Ctx>, op: &CtxOp) -> Option<Event>;
}

/// Maps addresses to ids in order of first appearance.
#[derive(Default)]
struct Ids {
    map: Vec<(usize, u32)>,
    next: u32,
}

impl Ids {
    fn id(&mut self, addr: usize) -> u32 {
        if let Some(&(_, id)) = self.map.iter().find(|(a, _)| *a == addr) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        self.map.push((addr, id));
        id
    }
    fn lookup(&self, addr: usize) -> Option<u32> {
        self.map.iter().find(|(a, _)| *a == addr).map(|&(_, id)| id)
    }
    fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        self.map.retain(|(a, _)| keep(*a));
    }
}

#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
    jobs: Ids,
    ctxs: Ids,
}

thread_local! {
    static REC: RefCell<Recorder> = RefCell::new(Recorder::default());
}

/// Appends an event to this thread's trace.
pub fn record(e: Event) {
    REC.with(|r| r.borrow_mut().events.push(e));
}

/// The id of a job handle address.
pub fn job_id(addr: usize) -> u32 {
    REC.with(|r| r.borrow_mut().jobs.id(addr))
}

/// The id of a wait ctx address.
pub fn ctx_id(addr: usize) -> u32 {
    REC.with(|r| r.borrow_mut().ctxs.id(addr))
}

/// The id of a wait ctx address if it was seen before (cleanups may run for contexts the trace
/// never named).
pub fn known_ctx_id(addr: usize) -> Option<u32> {
    REC.with(|r| r.borrow().ctxs.lookup(addr))
}

fn take_events() -> Vec<Event> {
    REC.with(|r| std::mem::take(&mut r.borrow_mut().events))
}

fn reset_recorder() {
    REC.with(|r| *r.borrow_mut() = Recorder::default());
}

/// Value a test callback returns: identifies both the function and its argument.
pub fn callback_value(cb: u8, arg: i32) -> i32 {
    1000 * (i32::from(cb) + 1) + arg
}

/// Key pointer used for key number `k` (distinct, non-NULL, never dereferenced).
pub fn key_addr(k: u8) -> usize {
    0x1000 + 16 * usize::from(k)
}

/// Inverse of [`key_addr`].
pub fn key_of_addr(a: usize) -> u8 {
    u8::try_from(a.wrapping_sub(0x1000) / 16).unwrap_or(u8::MAX)
}

/// Runs a job's script; `args` is the job's view of its args copy. Kept small and flat: on the
/// OpenSSL backend it runs on a 32 KB stack.
pub fn run_script<B: Backend>(script: &Script, args: Option<&[u8]>) -> i32 {
    for a in &script.actions {
        match a {
            Action::Pause => {
                let r = B::pause();
                record(Event::Pause(r));
            }
            Action::Block => B::block_pause(),
            Action::Unblock => B::unblock_pause(),
            Action::CurrentJob => {
                let j = B::current_job_addr().map(job_id);
                record(Event::CurrentJob(j));
            }
            Action::CurrentWaitCtx => {
                let c = B::current_wait_ctx_addr().map(ctx_id);
                record(Event::WaitCtx(c));
            }
            Action::Ctx(op) => match B::ctx_op(None, op) {
                Some(e) => record(e),
                None => record(Event::Skipped("job has no wait ctx")),
            },
            Action::ReadArgs => record(Event::Args(args.map(<[u8]>::to_vec))),
        }
    }
    script.ret
}

/// Slots for paused jobs and the driver's wait contexts.
struct State<B: Backend> {
    slots: Vec<Option<(B::Job, Option<usize>)>>,
    ctxs: Vec<Option<B::Ctx>>,
}

impl<B: Backend> State<B> {
    fn slot(&mut self, i: usize) -> &mut Option<(B::Job, Option<usize>)> {
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        &mut self.slots[i]
    }
    fn ctx_in_use(&self, c: usize) -> bool {
        self.slots.iter().flatten().any(|(_, cc)| *cc == Some(c))
    }
    fn any_paused(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }
    /// Forgets the ids of jobs that are not paused: after a pool is replaced or freed, a new job
    /// may be allocated at a freed job's address, which is not reuse.
    fn forget_idle_jobs(&self) {
        let live: Vec<usize> = self
            .slots
            .iter()
            .flatten()
            .map(|(j, _)| B::job_addr(j))
            .collect();
        REC.with(|r| r.borrow_mut().jobs.retain(|a| live.contains(&a)));
    }
    fn record_outcome(&mut self, slot: usize, ctx: Option<usize>, o: Outcome<B::Job>) {
        let job = o.job.as_ref().map(|j| job_id(B::job_addr(j)));
        record(Event::Start {
            rc: o.rc,
            ret: o.ret,
            job,
        });
        if let Some(j) = o.job {
            *self.slot(slot) = Some((j, ctx));
        }
    }
}

fn run_step<B: Backend>(st: &mut State<B>, step: &Step) {
    match step {
        Step::Init { max, init } => {
            let ok = B::init_thread(*max, *init);
            record(Event::Init { ok });
            st.forget_idle_jobs();
        }
        Step::Cleanup => {
            if st.any_paused() {
                record(Event::Skipped("jobs are paused"));
            } else {
                B::cleanup_thread();
                st.forget_idle_jobs();
            }
        }
        Step::NewCtx => {
            let c = B::new_ctx();
            record(Event::NewCtx(ctx_id(B::ctx_addr(&c))));
            st.ctxs.push(Some(c));
        }
        Step::FreeCtx(i) => {
            if st.ctx_in_use(*i) {
                record(Event::Skipped("a paused job uses it"));
            } else if let Some(c) = st.ctxs.get_mut(*i).and_then(Option::take) {
                let addr = B::ctx_addr(&c);
                B::free_ctx(c);
                REC.with(|r| r.borrow_mut().ctxs.retain(|a| a != addr));
            } else {
                record(Event::Skipped("no such ctx"));
            }
        }
        Step::Start {
            slot,
            ctx,
            script,
            args,
        } => {
            if st.slot(*slot).is_some() {
                record(Event::Skipped("slot holds a paused job"));
                return;
            }
            let c = match ctx {
                Some(i) => match st.ctxs.get(*i).and_then(Option::as_ref) {
                    Some(c) => Some(c),
                    None => {
                        record(Event::Skipped("no such ctx"));
                        return;
                    }
                },
                None => None,
            };
            let o = B::start(c, Rc::new(script.clone()), args);
            st.record_outcome(*slot, *ctx, o);
        }
        Step::Resume { slot, decoy } => {
            let Some((job, ctx)) = st.slot(*slot).take() else {
                record(Event::Skipped("slot is empty"));
                return;
            };
            if ctx.is_none() {
                // OpenSSL dereferences the NULL wait ctx on resume (§10).
                record(Event::Skipped("job has no wait ctx"));
                *st.slot(*slot) = Some((job, ctx));
                return;
            }
            let decoy_ctx = if *decoy {
                st.ctxs.iter().flatten().last()
            } else {
                None
            };
            let o = B::resume(job, decoy_ctx);
            st.record_outcome(*slot, ctx, o);
        }
        Step::Ctx { ctx, op } => match st.ctxs.get(*ctx).and_then(Option::as_ref) {
            Some(c) => {
                if let Some(e) = B::ctx_op(Some(c), op) {
                    record(e);
                }
            }
            None => record(Event::Skipped("no such ctx")),
        },
        Step::Block => B::block_pause(),
        Step::Unblock => B::unblock_pause(),
        Step::PauseOutside => record(Event::Pause(B::pause())),
        Step::CurrentJobOutside => record(Event::CurrentJob(B::current_job_addr().map(job_id))),
        Step::JobWaitCtx { slot } => match st.slot(*slot) {
            Some((j, _)) => {
                let c = B::job_wait_ctx_addr(j).map(ctx_id);
                record(Event::WaitCtx(c));
            }
            None => record(Event::Skipped("slot is empty")),
        },
        Step::IsCapable => record(Event::Capable(B::is_capable())),
        Step::ClobberArgs => B::clobber_args(),
    }
    let errs = B::take_errors();
    if !errs.is_empty() {
        record(Event::Errors(errs));
    }
}

/// Upper bound on resumes per job while draining at the end (scripts are finite, so a job that
/// keeps pausing longer than this is a bug in a backend).
const DRAIN_LIMIT: usize = 1000;

/// Runs `steps` on the current thread (which must be fresh: the pool is per thread), then resumes
/// every job left paused until it finishes and frees every wait ctx left, so that nothing leaks and
/// the cleanups are part of the trace.
pub fn run<B: Backend>(steps: &[Step]) -> Trace {
    reset_recorder();
    let mut st = State::<B> {
        slots: Vec::new(),
        ctxs: Vec::new(),
    };
    let mut trace = Vec::new();
    for s in steps {
        run_step(&mut st, s);
        trace.push(StepTrace {
            step: s.to_string(),
            events: take_events(),
        });
    }
    for slot in 0..st.slots.len() {
        let mut n = 0;
        while st.slots[slot].as_ref().is_some_and(|(_, c)| c.is_some()) && n < DRAIN_LIMIT {
            let s = Step::Resume { slot, decoy: false };
            run_step(&mut st, &s);
            trace.push(StepTrace {
                step: format!("(end) {s}"),
                events: take_events(),
            });
            n += 1;
        }
    }
    for i in 0..st.ctxs.len() {
        if st.ctxs[i].is_some() && !st.ctx_in_use(i) {
            let s = Step::FreeCtx(i);
            run_step(&mut st, &s);
            trace.push(StepTrace {
                step: format!("(end) {s}"),
                events: take_events(),
            });
        }
    }
    // Jobs without a wait ctx that paused cannot be resumed on OpenSSL; they are left to leak
    // there (and dropped, i.e. cancelled, on asyncjob). Neither is observable in the trace.
    drop(st);
    trace
}

/// Runs `steps` on a new thread, so that it gets a fresh pool.
pub fn run_on_new_thread<B: Backend>(steps: &[Step]) -> Trace {
    let steps = steps.to_vec();
    std::thread::Builder::new()
        .name(format!("scenario-{}", B::NAME))
        .spawn(move || run::<B>(&steps))
        .expect("spawn scenario thread")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_first_appearance_and_survive_only_what_is_kept() {
        let mut ids = Ids::default();
        assert_eq!((ids.id(0x50), ids.id(0x10), ids.id(0x50)), (0, 1, 0));
        ids.retain(|a| a == 0x10);
        assert_eq!(ids.lookup(0x50), None);
        assert_eq!(ids.id(0x50), 2, "a forgotten address is a new object");
        assert_eq!(ids.lookup(0x10), Some(1));
    }

    #[test]
    fn keys_round_trip() {
        for k in 0..8 {
            assert_eq!(key_of_addr(key_addr(k)), k);
        }
        assert_ne!(callback_value(0, 5), callback_value(1, 5));
    }
}

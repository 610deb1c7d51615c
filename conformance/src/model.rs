//! The scenario language: driver steps, the scripts jobs run, and the trace events both backends
//! produce. Everything here is plain data so that one scenario runs unchanged on both backends.

use serde::Serialize;
use std::fmt;

/// What `ASYNC_start_job` gets as `args`/`size` (in Rust: what the closure captures).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ArgSpec {
    /// `args = NULL, size = 0`.
    None,
    /// A buffer copied at start.
    Bytes(Vec<u8>),
    /// `args = NULL, size = n`: OpenSSL ignores the size and calls `func(NULL)`.
    NullWithSize(usize),
}

/// One wait-context operation, run by the driver or by a job on its own wait context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CtxOp {
    /// `ASYNC_WAIT_CTX_set_wait_fd(ctx, key, fd, data, cleanup ? recorder : NULL)`.
    SetWaitFd {
        key: u8,
        fd: i32,
        data: u8,
        cleanup: bool,
    },
    /// `ASYNC_WAIT_CTX_get_fd`.
    GetFd { key: u8 },
    /// `ASYNC_WAIT_CTX_get_all_fds` (count, then list).
    AllFds,
    /// `ASYNC_WAIT_CTX_get_changed_fds` (counts, then both lists).
    ChangedFds,
    /// `ASYNC_WAIT_CTX_clear_fd`.
    ClearFd { key: u8 },
    /// `ASYNC_WAIT_CTX_set_status`.
    SetStatus(i32),
    /// `ASYNC_WAIT_CTX_get_status`.
    GetStatus,
    /// `ASYNC_WAIT_CTX_set_callback(ctx, cb, arg)`; `cb = None` is a NULL function pointer.
    SetCallback { cb: Option<u8>, arg: i32 },
    /// `ASYNC_WAIT_CTX_get_callback`, and if one is set, call it and record what it returns.
    GetCallback,
}

/// What a job does, in order, before it returns `Script::ret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// `ASYNC_pause_job()`; records its return value once the job runs again.
    Pause,
    /// `ASYNC_block_pause()`.
    Block,
    /// `ASYNC_unblock_pause()`.
    Unblock,
    /// `ASYNC_get_current_job()`.
    CurrentJob,
    /// `ASYNC_get_wait_ctx(ASYNC_get_current_job())`.
    CurrentWaitCtx,
    /// An operation on the job's own wait context.
    Ctx(CtxOp),
    /// Read the args copy the job was given.
    ReadArgs,
}

/// The body of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Script {
    pub actions: Vec<Action>,
    pub ret: i32,
}

impl Script {
    pub fn new(ret: i32, actions: impl Into<Vec<Action>>) -> Self {
        Script {
            actions: actions.into(),
            ret,
        }
    }
    /// Whether a job running this script may touch its wait context (pause or ctx ops); such jobs
    /// always get one in generated programs, because OpenSSL crashes without it (§10).
    pub fn needs_wait_ctx(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Pause | Action::Ctx(_)))
    }
}

/// One step of the driver (the code outside any job).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Step {
    /// `ASYNC_init_thread(max, init)`.
    Init { max: usize, init: usize },
    /// `ASYNC_cleanup_thread()` (skipped while jobs are paused: resuming them would be UB).
    Cleanup,
    /// `ASYNC_WAIT_CTX_new()`; contexts are numbered in creation order.
    NewCtx,
    /// `ASYNC_WAIT_CTX_free(ctx)` (skipped while a paused job uses it: UAF in OpenSSL).
    FreeCtx(usize),
    /// `ASYNC_start_job(&slot, ctx, &ret, script, args)` with `*job == NULL`.
    Start {
        slot: usize,
        ctx: Option<usize>,
        script: Script,
        args: ArgSpec,
    },
    /// `ASYNC_start_job(&slot, ...)` resuming the job paused in `slot`. With `decoy`, OpenSSL is
    /// given a different func, args and wait ctx (it must ignore them).
    Resume { slot: usize, decoy: bool },
    /// A wait-context operation from outside any job.
    Ctx { ctx: usize, op: CtxOp },
    /// `ASYNC_block_pause()` outside any job.
    Block,
    /// `ASYNC_unblock_pause()` outside any job.
    Unblock,
    /// `ASYNC_pause_job()` outside any job.
    PauseOutside,
    /// `ASYNC_get_current_job()` outside any job.
    CurrentJobOutside,
    /// `ASYNC_get_wait_ctx(job)` of the job paused in `slot`.
    JobWaitCtx { slot: usize },
    /// `ASYNC_is_capable()`.
    IsCapable,
    /// Overwrite the caller's args buffer of the last start (the job must still see its copy).
    ClobberArgs,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Init { max, init } => write!(f, "init_thread({max},{init})"),
            Step::Cleanup => write!(f, "cleanup_thread()"),
            Step::NewCtx => write!(f, "WAIT_CTX_new()"),
            Step::FreeCtx(c) => write!(f, "WAIT_CTX_free(c{c})"),
            Step::Start {
                slot,
                ctx,
                script,
                args,
            } => {
                write!(f, "start(slot {slot}, ")?;
                match ctx {
                    Some(c) => write!(f, "c{c}")?,
                    None => write!(f, "NULL")?,
                }
                write!(f, ", {args:?}, {:?} ret {})", script.actions, script.ret)
            }
            Step::Resume { slot, decoy } => {
                write!(
                    f,
                    "resume(slot {slot}{})",
                    if *decoy { ", decoy func/args/ctx" } else { "" }
                )
            }
            Step::Ctx { ctx, op } => write!(f, "c{ctx}.{op:?}"),
            Step::Block => write!(f, "block_pause() outside"),
            Step::Unblock => write!(f, "unblock_pause() outside"),
            Step::PauseOutside => write!(f, "pause_job() outside"),
            Step::CurrentJobOutside => write!(f, "get_current_job() outside"),
            Step::JobWaitCtx { slot } => write!(f, "get_wait_ctx(slot {slot})"),
            Step::IsCapable => write!(f, "is_capable()"),
            Step::ClobberArgs => write!(f, "caller overwrites its args buffer"),
        }
    }
}

/// Return code of `ASYNC_start_job`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StartRc {
    Err,
    NoJobs,
    Pause,
    Finish,
}

impl StartRc {
    pub fn from_c(rc: i32) -> Option<Self> {
        match rc {
            0 => Some(StartRc::Err),
            1 => Some(StartRc::NoJobs),
            2 => Some(StartRc::Pause),
            3 => Some(StartRc::Finish),
            _ => None,
        }
    }
}

/// `*ret` before the call; it must still hold this after anything but FINISH.
pub const RET_SENTINEL: i32 = -1;

/// One observable result. Job handles and wait contexts appear as small ids given in order of
/// first appearance, so identity (and LIFO reuse) is compared, not addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Event {
    Init {
        ok: bool,
    },
    /// (library, reason) of each entry drained from the error queue after a driver step.
    Errors(Vec<(i32, i32)>),
    Start {
        rc: StartRc,
        ret: i32,
        job: Option<u32>,
    },
    NewCtx(u32),
    /// Return value of `ASYNC_pause_job` (recorded when it returns).
    Pause(i32),
    CurrentJob(Option<u32>),
    WaitCtx(Option<u32>),
    Args(Option<Vec<u8>>),
    SetFd(i32),
    GetFd(Option<(i32, u8)>),
    AllFds(Vec<i32>),
    Changed {
        nadd: usize,
        ndel: usize,
        add: Vec<i32>,
        del: Vec<i32>,
    },
    Clear(i32),
    SetStatus(i32),
    Status(i32),
    SetCallback(i32),
    /// The value returned by calling the stored callback, or None when `get_callback` says none.
    Callback(Option<i32>),
    /// An fd cleanup function ran: (ctx, key, fd, custom data).
    Cleanup {
        ctx: Option<u32>,
        key: u8,
        fd: i32,
        data: u8,
    },
    Capable(bool),
    /// The func given to a resume ran (it must never run).
    DecoyCalled,
    /// The step was not run because it would be undefined behaviour in OpenSSL.
    Skipped(&'static str),
}

fn opt_id(f: &mut fmt::Formatter<'_>, p: char, id: Option<u32>) -> fmt::Result {
    match id {
        Some(i) => write!(f, "{p}{i}"),
        None => write!(f, "-"),
    }
}

fn list(f: &mut fmt::Formatter<'_>, v: &[i32]) -> fmt::Result {
    write!(f, "[")?;
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            write!(f, ",")?;
        }
        write!(f, "{x}")?;
    }
    write!(f, "]")
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Init { ok } => write!(f, "init={}", u8::from(*ok)),
            Event::Errors(e) => {
                write!(f, "err=")?;
                for (i, (lib, reason)) in e.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{lib}:{reason}")?;
                }
                Ok(())
            }
            Event::Start { rc, ret, job } => {
                let rc = match rc {
                    StartRc::Err => "ERR",
                    StartRc::NoJobs => "NO_JOBS",
                    StartRc::Pause => "PAUSE",
                    StartRc::Finish => "FINISH",
                };
                write!(f, "{rc} ret={ret} job=")?;
                opt_id(f, 'J', *job)
            }
            Event::NewCtx(c) => write!(f, "ctx=C{c}"),
            Event::Pause(r) => write!(f, "pause={r}"),
            Event::CurrentJob(j) => {
                write!(f, "cur=")?;
                opt_id(f, 'J', *j)
            }
            Event::WaitCtx(c) => {
                write!(f, "wctx=")?;
                opt_id(f, 'C', *c)
            }
            Event::Args(None) => write!(f, "args=NULL"),
            Event::Args(Some(b)) => {
                write!(f, "args=")?;
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
            Event::SetFd(r) => write!(f, "set_fd={r}"),
            Event::GetFd(None) => write!(f, "fd=-"),
            Event::GetFd(Some((fd, d))) => write!(f, "fd={fd}/{d}"),
            Event::AllFds(v) => {
                write!(f, "all=")?;
                list(f, v)
            }
            Event::Changed {
                nadd,
                ndel,
                add,
                del,
            } => {
                write!(f, "add={nadd}")?;
                list(f, add)?;
                write!(f, "/del={ndel}")?;
                list(f, del)
            }
            Event::Clear(r) => write!(f, "clear={r}"),
            Event::SetStatus(r) => write!(f, "set_status={r}"),
            Event::Status(s) => write!(f, "status={s}"),
            Event::SetCallback(r) => write!(f, "set_cb={r}"),
            Event::Callback(None) => write!(f, "cb=-"),
            Event::Callback(Some(v)) => write!(f, "cb={v}"),
            Event::Cleanup { ctx, key, fd, data } => {
                write!(f, "cleanup(")?;
                opt_id(f, 'C', *ctx)?;
                write!(f, ",k{key},{fd},{data})")
            }
            Event::Capable(c) => write!(f, "capable={}", u8::from(*c)),
            Event::DecoyCalled => write!(f, "DECOY-CALLED"),
            Event::Skipped(why) => write!(f, "skipped({why})"),
        }
    }
}

/// The events of one driver step (including everything its jobs did meanwhile).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepTrace {
    pub step: String,
    pub events: Vec<Event>,
}

impl StepTrace {
    /// The events as one line, the form expectations are written in.
    pub fn line(&self) -> String {
        let v: Vec<String> = self.events.iter().map(|e| e.to_string()).collect();
        v.join(" ")
    }
}

/// A whole run of a scenario on one backend.
pub type Trace = Vec<StepTrace>;

/// The first step where two traces differ: (index, step text, left line, right line).
pub fn first_difference(a: &Trace, b: &Trace) -> Option<(usize, String, String, String)> {
    let n = a.len().max(b.len());
    for i in 0..n {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                let step = x.or(y).map(|s| s.step.clone()).unwrap_or_default();
                let line =
                    |s: Option<&StepTrace>| s.map_or("(no such step)".to_string(), StepTrace::line);
                return Some((i, step, line(x), line(y)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(events: Vec<Event>) -> StepTrace {
        StepTrace {
            step: "s".into(),
            events,
        }
    }

    #[test]
    fn lines_are_compact_and_distinguish_results() {
        let t = st(vec![
            Event::Pause(1),
            Event::Start {
                rc: StartRc::Pause,
                ret: RET_SENTINEL,
                job: Some(0),
            },
            Event::Changed {
                nadd: 2,
                ndel: 1,
                add: vec![11, 10],
                del: vec![9],
            },
            Event::Cleanup {
                ctx: None,
                key: 4,
                fd: 13,
                data: 4,
            },
            Event::Args(Some(vec![0x2a, 0])),
            Event::Errors(vec![(51, 103)]),
        ]);
        assert_eq!(
            t.line(),
            "pause=1 PAUSE ret=-1 job=J0 add=2[11,10]/del=1[9] cleanup(-,k4,13,4) args=2a00 err=51:103"
        );
        assert_ne!(
            Event::Args(None).to_string(),
            Event::Args(Some(Vec::new())).to_string()
        );
    }

    #[test]
    fn first_difference_finds_changed_and_missing_steps() {
        let a = vec![st(vec![Event::Pause(1)]), st(vec![Event::Clear(1)])];
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b[1] = st(vec![Event::Clear(0)]);
        let d = first_difference(&a, &b).expect("differs");
        assert_eq!((d.0, d.2.as_str(), d.3.as_str()), (1, "clear=1", "clear=0"));
        b.truncate(1);
        assert_eq!(
            first_difference(&a, &b).map(|d| (d.0, d.3)),
            Some((1, "(no such step)".to_string()))
        );
    }

    #[test]
    fn scripts_that_pause_or_use_their_ctx_need_one() {
        assert!(Script::new(0, [Action::Pause]).needs_wait_ctx());
        assert!(Script::new(0, [Action::Ctx(CtxOp::AllFds)]).needs_wait_ctx());
        assert!(!Script::new(0, [Action::CurrentJob, Action::Block]).needs_wait_ctx());
    }
}

//! The asyncjob backend of the driver: the same steps through the safe Rust API.

use crate::driver::{self, Backend, Outcome};
use crate::model::{ArgSpec, CtxOp, Event, RET_SENTINEL, Script, StartRc};
use asyncjob::{Error, Job, Resumed, Started, WaitCallback, WaitCtx, WaitKey};
use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

/// asyncjob as a driver backend.
#[derive(Debug)]
pub struct Aj;

/// What OpenSSL would have put on its error queue for the errors asyncjob returned, drained after
/// every driver step like OpenSSL's queue. (-1, -1) marks an error OpenSSL has no counterpart for,
/// so that it shows up as a difference.
const UNEXPECTED: (i32, i32) = (-1, -1);
/// `ERR_LIB_ASYNC`, `ASYNC_R_INVALID_POOL_SIZE`.
pub const INVALID_POOL_SIZE: (i32, i32) = (51, 103);

thread_local! {
    static ERRORS: RefCell<Vec<(i32, i32)>> = const { RefCell::new(Vec::new()) };
}

fn queue(e: (i32, i32)) {
    ERRORS.with(|q| q.borrow_mut().push(e));
}

fn data_ptr(d: u8) -> *mut c_void {
    std::ptr::without_provenance_mut(usize::from(d))
}

/// Pads or cuts a list to the length the counters report, as a caller of the C API sees it
/// (arrays sized from the counts, unwritten entries left at -1).
fn to_len(mut v: Vec<i32>, n: usize) -> Vec<i32> {
    v.resize(n, -1);
    v
}

fn op(c: &WaitCtx, op: &CtxOp) -> Event {
    match op {
        CtxOp::SetWaitFd {
            key,
            fd,
            data,
            cleanup,
        } => {
            let ctx_addr = c.as_ptr() as usize;
            let cb: Option<asyncjob::FdCleanup> = cleanup.then(|| {
                Box::new(move |k: WaitKey, fd, d: *mut c_void| {
                    driver::record(Event::Cleanup {
                        ctx: driver::known_ctx_id(ctx_addr),
                        key: driver::key_of_addr(k.addr()),
                        fd,
                        data: d as usize as u8,
                    });
                }) as asyncjob::FdCleanup
            });
            c.set_wait_fd(
                WaitKey::from_addr(driver::key_addr(*key)),
                *fd,
                data_ptr(*data),
                cb,
            );
            Event::SetFd(1)
        }
        CtxOp::GetFd { key } => {
            let r = c.fd(WaitKey::from_addr(driver::key_addr(*key)));
            Event::GetFd(r.map(|(fd, d)| (fd, d as usize as u8)))
        }
        CtxOp::AllFds => {
            let v = c.all_fds();
            // The slice-filling forms must agree with the Vec forms (C callers see only those).
            let mut buf = vec![-1; v.len() + 2];
            let n = c.copy_all_fds(&mut buf);
            let mut short = vec![-1; v.len().saturating_sub(1)];
            let n_short = c.copy_all_fds(&mut short);
            if n != v.len()
                || c.fd_count() != v.len()
                || buf[..n] != v[..]
                || n_short != v.len()
                || !v.starts_with(&short)
            {
                queue(UNEXPECTED);
            }
            Event::AllFds(v)
        }
        CtxOp::ChangedFds => {
            let (nadd, ndel) = c.changed_counts();
            let (add, del) = c.changed_fds();
            let mut ab = vec![-1; nadd + 2];
            let mut db = vec![-1; ndel + 2];
            let counts = c.copy_changed_fds(Some(&mut ab), Some(&mut db));
            if counts != (nadd, ndel)
                || c.copy_changed_fds(None, None) != (nadd, ndel)
                || !ab.starts_with(&add)
                || !db.starts_with(&del)
            {
                queue(UNEXPECTED);
            }
            Event::Changed {
                nadd,
                ndel,
                add: to_len(add, nadd),
                del: to_len(del, ndel),
            }
        }
        CtxOp::ClearFd { key } => Event::Clear(i32::from(
            c.clear_fd(WaitKey::from_addr(driver::key_addr(*key))),
        )),
        CtxOp::SetStatus(s) => {
            c.set_status(*s);
            Event::SetStatus(1)
        }
        CtxOp::GetStatus => Event::Status(c.status()),
        CtxOp::SetCallback { cb, arg } => {
            let f = cb.map(|i| {
                let (i, arg) = (i % 2, *arg);
                Rc::new(move || driver::callback_value(i, arg)) as Rc<dyn WaitCallback>
            });
            c.set_callback(f);
            Event::SetCallback(1)
        }
        CtxOp::GetCallback => Event::Callback(c.callback().map(|f| f.call())),
    }
}

fn started(r: Result<Started<impl FnOnce() -> i32, i32>, Error>) -> Outcome<Job<i32>> {
    match r {
        Ok(Started::Finished(v)) => Outcome {
            rc: StartRc::Finish,
            ret: v,
            job: None,
        },
        Ok(Started::Paused(j)) => Outcome {
            rc: StartRc::Pause,
            ret: RET_SENTINEL,
            job: Some(j),
        },
        Ok(Started::NoJobs(_)) => Outcome {
            rc: StartRc::NoJobs,
            ret: RET_SENTINEL,
            job: None,
        },
        Err(_) => {
            queue(UNEXPECTED);
            Outcome {
                rc: StartRc::Err,
                ret: RET_SENTINEL,
                job: None,
            }
        }
    }
}

impl Backend for Aj {
    type Job = Job<i32>;
    type Ctx = WaitCtx;
    const NAME: &'static str = "asyncjob";

    fn init_thread(max: usize, init: usize) -> bool {
        match asyncjob::init_thread(max, init) {
            Ok(()) => true,
            Err(Error::InvalidPoolSize { .. }) => {
                queue(INVALID_POOL_SIZE);
                false
            }
            Err(_) => {
                queue(UNEXPECTED);
                false
            }
        }
    }

    fn cleanup_thread() {
        if asyncjob::cleanup_thread().is_err() {
            queue(UNEXPECTED);
        }
    }

    fn take_errors() -> Vec<(i32, i32)> {
        ERRORS.with(|q| std::mem::take(&mut *q.borrow_mut()))
    }

    fn new_ctx() -> WaitCtx {
        WaitCtx::new()
    }

    fn free_ctx(ctx: WaitCtx) {
        drop(ctx);
    }

    fn ctx_addr(ctx: &WaitCtx) -> usize {
        ctx.as_ptr() as usize
    }

    fn start(ctx: Option<&WaitCtx>, script: Rc<Script>, args: &ArgSpec) -> Outcome<Job<i32>> {
        // The Rust counterpart of OpenSSL's args copy: the closure owns a copy.
        let copy: Option<Vec<u8>> = match args {
            ArgSpec::Bytes(b) => Some(b.clone()),
            ArgSpec::None | ArgSpec::NullWithSize(_) => None,
        };
        started(asyncjob::start(ctx, move || {
            driver::run_script::<Aj>(&script, copy.as_deref())
        }))
    }

    fn resume(job: Job<i32>, _decoy: Option<&WaitCtx>) -> Outcome<Job<i32>> {
        match job.resume() {
            Ok(Resumed::Finished(v)) => Outcome {
                rc: StartRc::Finish,
                ret: v,
                job: None,
            },
            Ok(Resumed::Paused(j)) => Outcome {
                rc: StartRc::Pause,
                ret: RET_SENTINEL,
                job: Some(j),
            },
            Err(e) => {
                queue(UNEXPECTED);
                Outcome {
                    rc: StartRc::Err,
                    ret: RET_SENTINEL,
                    job: Some(e.job),
                }
            }
        }
    }

    fn job_addr(job: &Job<i32>) -> usize {
        job.id().addr()
    }

    fn job_wait_ctx_addr(job: &Job<i32>) -> Option<usize> {
        job.wait_ctx().map(|c| c.as_ptr() as usize)
    }

    fn clobber_args() {}

    fn block_pause() {
        asyncjob::block_pause().leak();
    }

    fn unblock_pause() {
        asyncjob::unblock_pause();
    }

    fn pause() -> i32 {
        asyncjob::pause();
        1
    }

    fn current_job_addr() -> Option<usize> {
        asyncjob::current_job().map(|j| j.addr())
    }

    fn current_wait_ctx_addr() -> Option<usize> {
        asyncjob::current_wait_ctx().map(|c| c.as_ptr() as usize)
    }

    fn is_capable() -> bool {
        asyncjob::is_capable()
    }

    fn ctx_op(ctx: Option<&WaitCtx>, o: &CtxOp) -> Option<Event> {
        match ctx {
            Some(c) => Some(op(c, o)),
            None => asyncjob::current_wait_ctx().map(|c| op(&c, o)),
        }
    }
}

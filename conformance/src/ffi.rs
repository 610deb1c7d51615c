//! The only module with `unsafe`: OpenSSL's ASYNC API declared by hand (openssl-sys has none),
//! linked through openssl-sys, and the OpenSSL backend of the driver built on it.
//!
//! Soundness rests on the driver's guards: every call here is one OpenSSL defines (no NULL wait
//! ctx on resume, no freed ctx under a paused job, no nesting, same thread). Handles are `!Send`.

use crate::driver::{self, Backend, Outcome};
use crate::model::{ArgSpec, CtxOp, Event, RET_SENTINEL, Script, StartRc};
use std::cell::RefCell;
use std::ffi::{CStr, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::rc::Rc;

/// Opaque `ASYNC_JOB`.
#[derive(Debug)]
#[repr(C)]
pub struct AsyncJob {
    _private: [u8; 0],
}

/// Opaque `ASYNC_WAIT_CTX`.
#[derive(Debug)]
#[repr(C)]
pub struct AsyncWaitCtx {
    _private: [u8; 0],
}

type JobFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type CallbackFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type CleanupFn = unsafe extern "C" fn(*mut AsyncWaitCtx, *const c_void, c_int, *mut c_void);
#[cfg(ossl320)]
type StackAllocFn = unsafe extern "C" fn(*mut usize) -> *mut c_void;
#[cfg(ossl320)]
type StackFreeFn = unsafe extern "C" fn(*mut c_void);

/// `ASYNC_ERR`, `ASYNC_NO_JOBS`, `ASYNC_PAUSE`, `ASYNC_FINISH`.
pub const ASYNC_PAUSE: c_int = 2;
pub const ASYNC_FINISH: c_int = 3;
const OPENSSL_INIT_ASYNC: u64 = 0x0000_0100;

// Force openssl-sys to be linked (it carries the link directives for libcrypto).
use openssl_sys as _;

unsafe extern "C" {
    fn OPENSSL_init_crypto(opts: u64, settings: *const c_void) -> c_int;

    fn ASYNC_init_thread(max_size: usize, init_size: usize) -> c_int;
    fn ASYNC_cleanup_thread();
    fn ASYNC_start_job(
        job: *mut *mut AsyncJob,
        ctx: *mut AsyncWaitCtx,
        ret: *mut c_int,
        func: Option<JobFn>,
        args: *mut c_void,
        size: usize,
    ) -> c_int;
    fn ASYNC_pause_job() -> c_int;
    fn ASYNC_get_current_job() -> *mut AsyncJob;
    fn ASYNC_get_wait_ctx(job: *mut AsyncJob) -> *mut AsyncWaitCtx;
    fn ASYNC_block_pause();
    fn ASYNC_unblock_pause();
    fn ASYNC_is_capable() -> c_int;

    fn ASYNC_WAIT_CTX_new() -> *mut AsyncWaitCtx;
    fn ASYNC_WAIT_CTX_free(ctx: *mut AsyncWaitCtx);
    fn ASYNC_WAIT_CTX_set_wait_fd(
        ctx: *mut AsyncWaitCtx,
        key: *const c_void,
        fd: c_int,
        custom_data: *mut c_void,
        cleanup: Option<CleanupFn>,
    ) -> c_int;
    fn ASYNC_WAIT_CTX_get_fd(
        ctx: *mut AsyncWaitCtx,
        key: *const c_void,
        fd: *mut c_int,
        custom_data: *mut *mut c_void,
    ) -> c_int;
    fn ASYNC_WAIT_CTX_get_all_fds(
        ctx: *mut AsyncWaitCtx,
        fd: *mut c_int,
        numfds: *mut usize,
    ) -> c_int;
    fn ASYNC_WAIT_CTX_get_changed_fds(
        ctx: *mut AsyncWaitCtx,
        addfd: *mut c_int,
        numaddfds: *mut usize,
        delfd: *mut c_int,
        numdelfds: *mut usize,
    ) -> c_int;
    fn ASYNC_WAIT_CTX_clear_fd(ctx: *mut AsyncWaitCtx, key: *const c_void) -> c_int;
    fn ASYNC_WAIT_CTX_set_callback(
        ctx: *mut AsyncWaitCtx,
        callback: Option<CallbackFn>,
        callback_arg: *mut c_void,
    ) -> c_int;
    fn ASYNC_WAIT_CTX_get_callback(
        ctx: *mut AsyncWaitCtx,
        callback: *mut Option<CallbackFn>,
        callback_arg: *mut *mut c_void,
    ) -> c_int;
    fn ASYNC_WAIT_CTX_set_status(ctx: *mut AsyncWaitCtx, status: c_int) -> c_int;
    fn ASYNC_WAIT_CTX_get_status(ctx: *mut AsyncWaitCtx) -> c_int;

    #[cfg(ossl320)]
    fn ASYNC_set_mem_functions(
        alloc_fn: Option<StackAllocFn>,
        free_fn: Option<StackFreeFn>,
    ) -> c_int;
    #[cfg(ossl320)]
    fn ASYNC_get_mem_functions(
        alloc_fn: *mut Option<StackAllocFn>,
        free_fn: *mut Option<StackFreeFn>,
    );
}

/// Initialises libcrypto (idempotent).
pub fn init_openssl() {
    // SAFETY: documented as safe to call any number of times from any thread.
    unsafe {
        OPENSSL_init_crypto(OPENSSL_INIT_ASYNC, ptr::null());
    }
}

/// The linked library's version string, e.g. "OpenSSL 3.0.19 27 Jan 2026".
pub fn openssl_version_text() -> String {
    // SAFETY: OpenSSL_version(OPENSSL_VERSION) returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(openssl_sys::OpenSSL_version(0)) }
        .to_string_lossy()
        .into_owned()
}

/// The linked library's version number, e.g. 0x30000130.
#[allow(clippy::useless_conversion, reason = "c_ulong is 32 bits on Windows")]
pub fn openssl_version_number() -> u64 {
    // SAFETY: no preconditions.
    u64::from(unsafe { openssl_sys::OpenSSL_version_num() })
}

/// The real libcrypto as a driver backend.
#[derive(Debug)]
pub struct Ossl;

/// A job paused in OpenSSL. Not `Send`: jobs must be resumed on their thread.
#[derive(Debug)]
pub struct OsslJob(NonNull<AsyncJob>, PhantomData<*const ()>);

/// A wait ctx created by `ASYNC_WAIT_CTX_new`, freed only through [`Backend::free_ctx`].
#[derive(Debug)]
pub struct OsslCtx(NonNull<AsyncWaitCtx>, PhantomData<*const ()>);

thread_local! {
    /// The script the next job started on this thread runs (the job picks it up at entry).
    static PENDING: RefCell<Option<(Rc<Script>, usize)>> = const { RefCell::new(None) };
    /// The caller's args buffer of the last start (see `Step::ClobberArgs`).
    static LAST_ARGS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" fn job_entry(args: *mut c_void) -> c_int {
    let Some((script, len)) = PENDING.with(|p| p.borrow_mut().take()) else {
        return i32::MIN;
    };
    let view = if args.is_null() {
        None
    } else {
        // SAFETY: OpenSSL passes its copy of the `len` bytes given to ASYNC_start_job; the copy
        // lives until this function returns.
        Some(unsafe { std::slice::from_raw_parts(args.cast::<u8>(), len) })
    };
    driver::run_script::<Ossl>(&script, view)
}

unsafe extern "C" fn decoy_entry(_args: *mut c_void) -> c_int {
    driver::record(Event::DecoyCalled);
    -77
}

unsafe extern "C" fn callback_0(arg: *mut c_void) -> c_int {
    driver::callback_value(0, arg as usize as i32)
}

unsafe extern "C" fn callback_1(arg: *mut c_void) -> c_int {
    driver::callback_value(1, arg as usize as i32)
}

unsafe extern "C" fn fd_cleanup(
    ctx: *mut AsyncWaitCtx,
    key: *const c_void,
    fd: c_int,
    data: *mut c_void,
) {
    driver::record(Event::Cleanup {
        ctx: driver::known_ctx_id(ctx as usize),
        key: driver::key_of_addr(key as usize),
        fd,
        data: data as usize as u8,
    });
}

fn outcome(rc: c_int, ret: c_int, job: *mut AsyncJob) -> Outcome<OsslJob> {
    Outcome {
        rc: StartRc::from_c(rc).unwrap_or(StartRc::Err),
        ret,
        job: NonNull::new(job).map(|j| OsslJob(j, PhantomData)),
    }
}

fn current_ctx() -> Option<NonNull<AsyncWaitCtx>> {
    // SAFETY: both calls accept any state; get_wait_ctx is given a non-NULL current job.
    unsafe {
        let j = ASYNC_get_current_job();
        if j.is_null() {
            None
        } else {
            NonNull::new(ASYNC_get_wait_ctx(j))
        }
    }
}

/// Runs one wait-ctx operation on a valid ctx.
fn ctx_op_on(c: NonNull<AsyncWaitCtx>, op: &CtxOp) -> Event {
    let c = c.as_ptr();
    // SAFETY: `c` is a live wait ctx (driver-owned, or the current job's, which the driver keeps
    // alive while the job exists); every out pointer is a valid local or a buffer of the size the
    // preceding counting call reported, plus slack.
    unsafe {
        match op {
            CtxOp::SetWaitFd {
                key,
                fd,
                data,
                cleanup,
            } => {
                let cb: Option<CleanupFn> = if *cleanup { Some(fd_cleanup) } else { None };
                let key = driver::key_addr(*key) as *const c_void;
                let data = usize::from(*data) as *mut c_void;
                Event::SetFd(ASYNC_WAIT_CTX_set_wait_fd(c, key, *fd, data, cb))
            }
            CtxOp::GetFd { key } => {
                let mut fd: c_int = -99;
                let mut data: *mut c_void = ptr::null_mut();
                let rc = ASYNC_WAIT_CTX_get_fd(
                    c,
                    driver::key_addr(*key) as *const c_void,
                    &mut fd,
                    &mut data,
                );
                Event::GetFd((rc == 1).then_some((fd, data as usize as u8)))
            }
            CtxOp::AllFds => {
                let mut n = 0usize;
                ASYNC_WAIT_CTX_get_all_fds(c, ptr::null_mut(), &mut n);
                let mut v = vec![-1; n + 4];
                ASYNC_WAIT_CTX_get_all_fds(c, v.as_mut_ptr(), &mut n);
                v.truncate(n);
                Event::AllFds(v)
            }
            CtxOp::ChangedFds => {
                let (mut na, mut nd) = (0usize, 0usize);
                ASYNC_WAIT_CTX_get_changed_fds(
                    c,
                    ptr::null_mut(),
                    &mut na,
                    ptr::null_mut(),
                    &mut nd,
                );
                let mut add = vec![-1; na + 4];
                let mut del = vec![-1; nd + 4];
                ASYNC_WAIT_CTX_get_changed_fds(
                    c,
                    add.as_mut_ptr(),
                    &mut na,
                    del.as_mut_ptr(),
                    &mut nd,
                );
                add.truncate(na);
                del.truncate(nd);
                Event::Changed {
                    nadd: na,
                    ndel: nd,
                    add,
                    del,
                }
            }
            CtxOp::ClearFd { key } => Event::Clear(ASYNC_WAIT_CTX_clear_fd(
                c,
                driver::key_addr(*key) as *const c_void,
            )),
            CtxOp::SetStatus(s) => Event::SetStatus(ASYNC_WAIT_CTX_set_status(c, *s)),
            CtxOp::GetStatus => Event::Status(ASYNC_WAIT_CTX_get_status(c)),
            CtxOp::SetCallback { cb, arg } => {
                let f: Option<CallbackFn> = match cb {
                    None => None,
                    Some(i) if i % 2 == 0 => Some(callback_0),
                    Some(_) => Some(callback_1),
                };
                Event::SetCallback(ASYNC_WAIT_CTX_set_callback(
                    c,
                    f,
                    *arg as usize as *mut c_void,
                ))
            }
            CtxOp::GetCallback => {
                let mut f: Option<CallbackFn> = None;
                let mut arg: *mut c_void = ptr::null_mut();
                let rc = ASYNC_WAIT_CTX_get_callback(c, &mut f, &mut arg);
                match (rc, f) {
                    (1, Some(f)) => Event::Callback(Some(f(arg))),
                    _ => Event::Callback(None),
                }
            }
        }
    }
}

impl Backend for Ossl {
    type Job = OsslJob;
    type Ctx = OsslCtx;
    const NAME: &'static str = "openssl";

    fn init_thread(max: usize, init: usize) -> bool {
        // SAFETY: any sizes are accepted or rejected cleanly; the driver keeps init sizes small.
        unsafe { ASYNC_init_thread(max, init) == 1 }
    }

    fn cleanup_thread() {
        // SAFETY: the driver calls this only while no job of this thread is paused.
        unsafe { ASYNC_cleanup_thread() }
    }

    fn take_errors() -> Vec<(i32, i32)> {
        let mut v = Vec::new();
        loop {
            // SAFETY: reads this thread's error queue.
            let e = unsafe { openssl_sys::ERR_get_error() };
            if e == 0 {
                return v;
            }
            v.push((openssl_sys::ERR_GET_LIB(e), openssl_sys::ERR_GET_REASON(e)));
        }
    }

    fn new_ctx() -> OsslCtx {
        // SAFETY: no preconditions; NULL (allocation failure) is turned into a panic.
        let p = unsafe { ASYNC_WAIT_CTX_new() };
        OsslCtx(
            NonNull::new(p).expect("ASYNC_WAIT_CTX_new failed"),
            PhantomData,
        )
    }

    fn free_ctx(ctx: OsslCtx) {
        // SAFETY: the ctx is consumed, and the driver frees it only when no paused job uses it.
        unsafe { ASYNC_WAIT_CTX_free(ctx.0.as_ptr()) }
    }

    fn ctx_addr(ctx: &OsslCtx) -> usize {
        ctx.0.as_ptr() as usize
    }

    fn start(ctx: Option<&OsslCtx>, script: Rc<Script>, args: &ArgSpec) -> Outcome<OsslJob> {
        let (argp, size, len) = match args {
            ArgSpec::None => (ptr::null_mut(), 0, 0),
            ArgSpec::Bytes(b) => {
                let p = LAST_ARGS.with(|l| {
                    let mut l = l.borrow_mut();
                    l.clone_from(b);
                    l.as_mut_ptr()
                });
                (p.cast::<c_void>(), b.len(), b.len())
            }
            ArgSpec::NullWithSize(n) => (ptr::null_mut(), *n, 0),
        };
        PENDING.with(|p| *p.borrow_mut() = Some((script, len)));
        let mut job: *mut AsyncJob = ptr::null_mut();
        let mut ret: c_int = RET_SENTINEL;
        let wctx = ctx.map_or(ptr::null_mut(), |c| c.0.as_ptr());
        // SAFETY: `argp` points to `size` readable bytes (LAST_ARGS is not touched until the call
        // returns) or is NULL; the job function is a valid `int (*)(void *)`.
        let rc = unsafe { ASYNC_start_job(&mut job, wctx, &mut ret, Some(job_entry), argp, size) };
        PENDING.with(|p| p.borrow_mut().take());
        outcome(rc, ret, job)
    }

    fn resume(job: OsslJob, decoy: Option<&OsslCtx>) -> Outcome<OsslJob> {
        let mut j = job.0.as_ptr();
        let mut ret: c_int = RET_SENTINEL;
        let mut junk = [0x5au8; 4];
        // SAFETY: `j` is a job this thread paused and has not resumed since; its wait ctx is alive
        // and non-NULL (driver guard). The decoy func/args/ctx are valid too, in case they were used.
        let rc = unsafe {
            if let Some(d) = decoy {
                ASYNC_start_job(
                    &mut j,
                    d.0.as_ptr(),
                    &mut ret,
                    Some(decoy_entry),
                    junk.as_mut_ptr().cast(),
                    junk.len(),
                )
            } else {
                let wctx = ASYNC_get_wait_ctx(j);
                ASYNC_start_job(&mut j, wctx, &mut ret, Some(job_entry), ptr::null_mut(), 0)
            }
        };
        outcome(rc, ret, j)
    }

    fn job_addr(job: &OsslJob) -> usize {
        job.0.as_ptr() as usize
    }

    fn job_wait_ctx_addr(job: &OsslJob) -> Option<usize> {
        // SAFETY: the job is paused, hence a live ASYNC_JOB.
        let c = unsafe { ASYNC_get_wait_ctx(job.0.as_ptr()) };
        (!c.is_null()).then_some(c as usize)
    }

    fn clobber_args() {
        LAST_ARGS.with(|l| l.borrow_mut().fill(0xee));
    }

    fn block_pause() {
        // SAFETY: no preconditions.
        unsafe { ASYNC_block_pause() }
    }

    fn unblock_pause() {
        // SAFETY: no preconditions.
        unsafe { ASYNC_unblock_pause() }
    }

    fn pause() -> i32 {
        // SAFETY: inside a job its wait ctx is non-NULL and alive (driver guard); outside a no-op.
        unsafe { ASYNC_pause_job() }
    }

    fn current_job_addr() -> Option<usize> {
        // SAFETY: no preconditions.
        let j = unsafe { ASYNC_get_current_job() };
        (!j.is_null()).then_some(j as usize)
    }

    fn current_wait_ctx_addr() -> Option<usize> {
        current_ctx().map(|c| c.as_ptr() as usize)
    }

    fn is_capable() -> bool {
        // SAFETY: no preconditions.
        unsafe { ASYNC_is_capable() == 1 }
    }

    fn ctx_op(ctx: Option<&OsslCtx>, op: &CtxOp) -> Option<Event> {
        let c = match ctx {
            Some(c) => c.0,
            None => current_ctx()?,
        };
        Some(ctx_op_on(c, op))
    }
}

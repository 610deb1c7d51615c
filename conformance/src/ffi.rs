//! The only module with `unsafe`: OpenSSL's ASYNC API declared by hand (openssl-sys has none),
//! linked through openssl-sys, and the OpenSSL backend of the driver built on it.
//!
//! Soundness rests on the driver's guards: every call here is one OpenSSL defines (no NULL wait
//! ctx on resume, no freed ctx under a paused job, no nesting, same thread). Handles are `!Send`.

use crate::driver::{self, Backend, Outcome};
use crate::model::{ArgSpec, CtxOp, Event, RET_SENTINEL, Script, StartRc};
use std::alloc::GlobalAlloc;
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
                    // A real buffer even for size 0 (the `args != NULL, size == 0` row).
                    l.reserve(1);
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

/// Whether the linked OpenSSL has `ASYNC_set/get_mem_functions` (3.2+).
pub const HAS_MEM_FUNCTIONS: bool = cfg!(ossl320);

static STACKS_ALLOCATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many stacks the counting allocators (Rust and C) handed out in this process.
pub fn counting_stacks_allocated() -> usize {
    STACKS_ALLOCATED.load(std::sync::atomic::Ordering::Relaxed)
}

const COUNTING_STACK: usize = 256 * 1024;

/// A stack allocator for asyncjob that counts what it hands out (page-aligned heap memory).
#[derive(Debug)]
pub struct CountingStacks;

fn counting_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(COUNTING_STACK, 4096).expect("valid layout")
}

// SAFETY: allocate returns fresh, exclusively owned, readable and writable memory of `size` bytes
// that stays valid until release gives it back to the global allocator with the same layout. It has
// no guard region below it, which the trait allows only when no job can outgrow its stack: the jobs
// run here are the harness's scenario scripts, a few frames deep on 256 KiB.
unsafe impl asyncjob::StackAllocator for CountingStacks {
    fn allocate(&self) -> Option<asyncjob::StackMemory> {
        // SAFETY: the layout has a non-zero size.
        let p = NonNull::new(unsafe { std::alloc::alloc(counting_layout()) })?;
        STACKS_ALLOCATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(asyncjob::StackMemory {
            base: p,
            size: COUNTING_STACK,
        })
    }
    fn release(&self, stack: asyncjob::StackMemory) {
        // SAFETY: `stack` came from allocate above, with this layout, and is released once.
        unsafe { std::alloc::dealloc(stack.base.as_ptr(), counting_layout()) }
    }
}

#[cfg(ossl320)]
unsafe extern "C" fn c_stack_alloc(num: *mut usize) -> *mut c_void {
    STACKS_ALLOCATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: OpenSSL passes a valid pointer to the requested size.
    unsafe { libc::malloc(*num) }
}

#[cfg(ossl320)]
unsafe extern "C" fn c_stack_free(p: *mut c_void) {
    // SAFETY: `p` came from c_stack_alloc.
    unsafe { libc::free(p) }
}

/// Body of `__child memfns-openssl-<case>` (same lines as `memfns::asyncjob_child`).
#[cfg(ossl320)]
pub fn openssl_memfns_child(case: &str) -> String {
    // SAFETY: the allocator functions are valid for the whole process; the jobs started here run a
    // function that returns at once, so no wait ctx is needed.
    unsafe {
        let set = || ASYNC_set_mem_functions(Some(c_stack_alloc), Some(c_stack_free));
        match case {
            "first-job" => {
                let a = set();
                // get must hand back the functions just set: calling them must go through ours.
                let (mut f, mut g) = (None, None);
                ASYNC_get_mem_functions(&mut f, &mut g);
                let (Some(f), Some(g)) = (f, g) else {
                    return "get_mem_functions gave NULL".into();
                };
                let mut num = 64usize;
                g(f(&mut num));
                if counting_stacks_allocated() != 1 {
                    return "get_mem_functions does not return the functions just set".into();
                }
                STACKS_ALLOCATED.store(0, std::sync::atomic::Ordering::Relaxed);
                let mut job = ptr::null_mut();
                let mut ret = RET_SENTINEL;
                let rc = ASYNC_start_job(
                    &mut job,
                    ptr::null_mut(),
                    &mut ret,
                    Some(return_5),
                    ptr::null_mut(),
                    0,
                );
                let r = if rc == ASYNC_FINISH {
                    format!("FINISH ret={ret}")
                } else {
                    "not finished".into()
                };
                format!(
                    "set={a} {r} allocs={} set={}",
                    counting_stacks_allocated(),
                    set()
                )
            }
            "precreate" => {
                let i = ASYNC_init_thread(1, 1);
                format!(
                    "init={i} allocs={} set={}",
                    counting_stacks_allocated(),
                    set()
                )
            }
            "init-zero" => {
                let i = ASYNC_init_thread(0, 0);
                format!("init={i} set={}", set())
            }
            _ => format!("unknown case {case}"),
        }
    }
}

/// Without mem functions in the linked OpenSSL there is nothing to run.
#[cfg(not(ossl320))]
pub fn openssl_memfns_child(_case: &str) -> String {
    "n/a: linked OpenSSL has no ASYNC_set_mem_functions".into()
}

unsafe extern "C" fn return_5(_: *mut c_void) -> c_int {
    5
}

// ---- benchmark primitives (the OpenSSL half of each speed case)

thread_local! {
    static STOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C" fn pause_until_stopped(_: *mut c_void) -> c_int {
    while !STOP.with(std::cell::Cell::get) {
        // SAFETY: runs inside a job started with a wait ctx.
        unsafe { ASYNC_pause_job() };
    }
    0
}

/// Time for `n` pause→resume round trips of one job.
pub fn ossl_pause_resume(n: u64) -> std::time::Duration {
    STOP.with(|s| s.set(false));
    // SAFETY: one job with a live wait ctx, resumed on this thread only, finished before the ctx is
    // freed.
    unsafe {
        let ctx = ASYNC_WAIT_CTX_new();
        let mut job = ptr::null_mut();
        let mut ret = 0;
        let rc = ASYNC_start_job(
            &mut job,
            ctx,
            &mut ret,
            Some(pause_until_stopped),
            ptr::null_mut(),
            0,
        );
        assert_eq!(rc, ASYNC_PAUSE, "benchmark job did not pause");
        let t = std::time::Instant::now();
        for _ in 0..n {
            ASYNC_start_job(
                &mut job,
                ctx,
                &mut ret,
                Some(pause_until_stopped),
                ptr::null_mut(),
                0,
            );
        }
        let d = t.elapsed();
        STOP.with(|s| s.set(true));
        let rc = ASYNC_start_job(
            &mut job,
            ctx,
            &mut ret,
            Some(pause_until_stopped),
            ptr::null_mut(),
            0,
        );
        assert_eq!(rc, ASYNC_FINISH, "benchmark job did not finish");
        ASYNC_WAIT_CTX_free(ctx);
        d
    }
}

/// Time for `n` start→finish runs of a pooled job that returns at once, with a 16-byte args copy
/// when `args16`.
pub fn ossl_start_finish(n: u64, args16: bool) -> std::time::Duration {
    let mut args = [7u8; 16];
    let (p, size) = if args16 {
        (args.as_mut_ptr().cast::<c_void>(), 16)
    } else {
        (ptr::null_mut(), 0)
    };
    // SAFETY: the job never pauses, so no wait ctx is needed; args points to 16 live bytes.
    unsafe {
        let mut job = ptr::null_mut();
        let mut ret = 0;
        let t = std::time::Instant::now();
        for _ in 0..n {
            ASYNC_start_job(&mut job, ptr::null_mut(), &mut ret, Some(return_5), p, size);
        }
        t.elapsed()
    }
}

/// Creates `n` paused jobs at once on this thread (call on a fresh thread: no idle jobs), and returns
/// (time to create them, resident bytes they added, how many paused). Finishes them all afterwards.
pub fn ossl_fresh_paused(n: usize) -> (std::time::Duration, i64, usize) {
    STOP.with(|s| s.set(false));
    // SAFETY: every job has the live wait ctx, is resumed on this thread, and all finish before the
    // ctx is freed.
    unsafe {
        ASYNC_init_thread(0, 0);
        let ctx = ASYNC_WAIT_CTX_new();
        let mut jobs: Vec<*mut AsyncJob> = Vec::with_capacity(n);
        let rss0 = rss_bytes();
        let t = std::time::Instant::now();
        for _ in 0..n {
            let mut job = ptr::null_mut();
            let mut ret = 0;
            if ASYNC_start_job(
                &mut job,
                ctx,
                &mut ret,
                Some(pause_until_stopped),
                ptr::null_mut(),
                0,
            ) != ASYNC_PAUSE
            {
                break;
            }
            jobs.push(job);
        }
        let d = t.elapsed();
        // Not counted: the harness's own vector of handles.
        let rss = rss_bytes() as i64 - rss0 as i64 - std::mem::size_of_val(jobs.as_slice()) as i64;
        let held = jobs.len();
        STOP.with(|s| s.set(true));
        for mut job in jobs {
            let mut ret = 0;
            ASYNC_start_job(
                &mut job,
                ctx,
                &mut ret,
                Some(pause_until_stopped),
                ptr::null_mut(),
                0,
            );
        }
        ASYNC_WAIT_CTX_free(ctx);
        ASYNC_cleanup_thread();
        (d, rss, held)
    }
}

/// Resident set size of the process, from /proc/self/statm (0 where that does not exist).
pub fn rss_bytes() -> usize {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

thread_local! {
    static ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A global allocator that counts this thread's heap allocations (the binary installs it; see
/// [`thread_allocations`]).
#[derive(Debug)]
pub struct CountingAlloc;

fn count_one() {
    // try_with: the counter may be gone while the thread is being torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call unchanged to the system allocator; counting touches only a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// Heap allocations (Rust's global allocator) made by this thread so far; stays 0 unless
/// [`CountingAlloc`] is the global allocator.
pub fn thread_allocations() -> u64 {
    ALLOCS.try_with(std::cell::Cell::get).unwrap_or(0)
}

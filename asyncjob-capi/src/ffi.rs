//! The exported `ASYNC_*` functions, and every `unsafe` operation of this crate: dereferencing the
//! pointers C hands us, the `ASYNC_WAIT_CTX` allocation, the args copy, the C stack allocator and the
//! calls into libcrypto found at run time.
//!
//! The semantics live in `asyncjob`; this module only converts between C's conventions and it.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use asyncjob::{AsyncFd, StackAllocator, StackMemory, WaitCallback, WaitCtx, WaitKey};

use crate::libctx::{self, GlobalDefaultFn, Set0DefaultFn};
use crate::state::{self, ErrorKind, Outcome};

pub(crate) const ASYNC_ERR: c_int = 0;
const ASYNC_NO_JOBS: c_int = 1;
pub(crate) const ASYNC_PAUSE: c_int = 2;
const ASYNC_FINISH: c_int = 3;

/// `int (*func)(void *)`. C jobs are never unwound by this library (a job still paused when its
/// thread exits is leaked, see `state::Table`). "C-unwind" only so that a forced unwind started by
/// the application inside a job (`pthread_exit`, `pthread_cancel`) may legally cross the job
/// function's frames up to the job's root, where asyncjob stops it.
type JobFn = unsafe extern "C-unwind" fn(*mut c_void) -> c_int;
type CleanupFn = unsafe extern "C" fn(*mut AsyncWaitCtx, *const c_void, AsyncFd, *mut c_void);
type CallbackFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type AllocFn = unsafe extern "C" fn(*mut usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);

// ---------------------------------------------------------------------------------------------
// libcrypto, when the process has it

/// `OPENSSL_INIT_ASYNC`.
const OPENSSL_INIT_ASYNC: u64 = 0x100;
/// `ERR_LIB_ASYNC`.
const ERR_LIB_ASYNC: c_int = 51;
const ERR_RFLAG_FATAL: c_int = 0x1 << 18;
const ERR_RFLAG_COMMON: c_int = 0x2 << 18;
const ERR_R_FATAL: c_int = ERR_RFLAG_FATAL | ERR_RFLAG_COMMON;
/// `ASYNC_R_INVALID_POOL_SIZE`.
const ASYNC_R_INVALID_POOL_SIZE: c_int = 103;
/// `ASYNC_R_INIT_FAILED`.
const ASYNC_R_INIT_FAILED: c_int = 105;
const ERR_R_MALLOC_FAILURE: c_int = 256 | ERR_R_FATAL;
const ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED: c_int = 257 | ERR_R_FATAL;
const ERR_R_PASSED_NULL_PARAMETER: c_int = 258 | ERR_R_FATAL;
const ERR_R_PASSED_INVALID_ARGUMENT: c_int = 262 | ERR_RFLAG_COMMON;

/// The libcrypto functions we use, looked up once with `dlsym(RTLD_DEFAULT)`: no link-time
/// dependency, and a process without libcrypto simply has none of them.
struct Crypto {
    init_crypto: Option<InitCryptoFn>,
    err_new: Option<ErrNewFn>,
    err_set_debug: Option<ErrSetDebugFn>,
    err_set_error: Option<ErrSetErrorFn>,
    set0_default: Option<Set0DefaultFn>,
    global_default: Option<GlobalDefaultFn>,
    /// Whether libcrypto will tell us when `OPENSSL_cleanup()` runs (see `crypto_alive`).
    cleanup_watched: bool,
}

/// `int OPENSSL_init_crypto(uint64_t opts, const OPENSSL_INIT_SETTINGS *settings)`
type InitCryptoFn = unsafe extern "C" fn(u64, *const c_void) -> c_int;
/// `void ERR_new(void)`
type ErrNewFn = unsafe extern "C" fn();
/// `void ERR_set_debug(const char *file, int line, const char *func)`
type ErrSetDebugFn = unsafe extern "C" fn(*const c_char, c_int, *const c_char);
/// `void ERR_set_error(int lib, int reason, const char *fmt, ...)`
type ErrSetErrorFn = unsafe extern "C" fn(c_int, c_int, *const c_char, ...);

static CRYPTO: OnceLock<Crypto> = OnceLock::new();

#[cfg(unix)]
fn lookup(name: &std::ffi::CStr) -> *mut c_void {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded objects'
    // symbol tables.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

#[cfg(not(unix))]
fn lookup(_name: &std::ffi::CStr) -> *mut c_void {
    ptr::null_mut()
}

fn crypto() -> &'static Crypto {
    CRYPTO.get_or_init(|| {
        // SAFETY: each symbol, when present, is libcrypto's public function of exactly the C
        // signature named in `Crypto` (OpenSSL 3.x <openssl/crypto.h>, <openssl/err.h>), and an
        // Option of a function pointer has the layout of a nullable pointer.
        let found = unsafe {
            Crypto {
                init_crypto: std::mem::transmute::<*mut c_void, Option<InitCryptoFn>>(lookup(
                    c"OPENSSL_init_crypto",
                )),
                err_new: std::mem::transmute::<*mut c_void, Option<ErrNewFn>>(lookup(c"ERR_new")),
                err_set_debug: std::mem::transmute::<*mut c_void, Option<ErrSetDebugFn>>(lookup(
                    c"ERR_set_debug",
                )),
                err_set_error: std::mem::transmute::<*mut c_void, Option<ErrSetErrorFn>>(lookup(
                    c"ERR_set_error",
                )),
                set0_default: std::mem::transmute::<*mut c_void, Option<Set0DefaultFn>>(lookup(
                    c"OSSL_LIB_CTX_set0_default",
                )),
                global_default: std::mem::transmute::<*mut c_void, Option<GlobalDefaultFn>>(
                    lookup(c"OSSL_LIB_CTX_get0_global_default"),
                ),
                cleanup_watched: false,
            }
        };
        let found = Crypto {
            cleanup_watched: found.init_crypto.is_some() && watch_cleanup(),
            ..found
        };
        if let Some(set0) = found.set0_default {
            // Installed before the first job can start (every start goes through here first).
            // The key libcrypto deletes in OPENSSL_cleanup() is read only when we hear of it.
            let hook = libctx::hook(set0, found.global_default, found.cleanup_watched);
            asyncjob::set_switch_hook(Box::leak(Box::new(hook)));
        }
        found
    })
}

/// `OPENSSL_init_crypto(OPENSSL_INIT_ASYNC, NULL)` where OpenSSL calls it: false after
/// `OPENSSL_cleanup()`, so that we fail where OpenSSL fails. True without libcrypto.
///
/// Once the call has succeeded it answers the same until `OPENSSL_cleanup()` (its only failure after
/// a success, and one that is permanent), so when we are told of the cleanup (see
/// [`watch_cleanup`]) the answer is kept and the call skipped: it costs about 50 instructions, a
/// sixth of a pause→resume round trip. Until then, and ever after the cleanup, the call is made as
/// OpenSSL makes it (with its error on the queue, if any).
#[inline]
pub(crate) fn crypto_alive() -> bool {
    if crypto_known_alive() {
        return true;
    }
    crypto_alive_call()
}

/// Whether libcrypto is known to be alive without asking it (`crypto_alive`'s first test).
#[inline(always)]
pub(crate) fn crypto_known_alive() -> bool {
    CRYPTO_STATE.load(Ordering::Relaxed) == CRYPTO_ALIVE
}

#[cold]
fn crypto_alive_call() -> bool {
    let c = crypto();
    match c.init_crypto {
        Some(init) => {
            // SAFETY: libcrypto's OPENSSL_init_crypto accepts these options and a NULL settings
            // pointer.
            let alive = unsafe { init(OPENSSL_INIT_ASYNC, ptr::null()) == 1 };
            if alive && c.cleanup_watched {
                // Not over a STOPPED left by a cleanup that ran meanwhile.
                let _ = CRYPTO_STATE.compare_exchange(
                    CRYPTO_UNKNOWN,
                    CRYPTO_ALIVE,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            alive
        }
        None => {
            // No libcrypto: nothing can stop. (One found later is never used: `crypto` looks once.)
            CRYPTO_STATE.store(CRYPTO_ALIVE, Ordering::Relaxed);
            true
        }
    }
}

const CRYPTO_UNKNOWN: u8 = 0;
const CRYPTO_ALIVE: u8 = 1;
// The cleanup is heard of only on Linux (`watch_cleanup`): elsewhere the next three are unused.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const CRYPTO_STOPPED: u8 = 2;
/// Whether `OPENSSL_init_crypto(OPENSSL_INIT_ASYNC)` is known to succeed.
static CRYPTO_STATE: AtomicU8 = AtomicU8::new(CRYPTO_UNKNOWN);

/// Run by libcrypto inside `OPENSSL_cleanup()` (after it has marked itself stopped): from now on
/// `crypto_alive` asks libcrypto again, and gets false.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
extern "C" fn on_openssl_cleanup() {
    CRYPTO_STATE.store(CRYPTO_STOPPED, Ordering::Relaxed);
    // The cleanup deletes the key the switch hook may read.
    libctx::forget_default_key();
}

/// `int OPENSSL_atexit(void (*handler)(void))`
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
type AtExitFn = unsafe extern "C" fn(extern "C" fn()) -> c_int;

/// Asks libcrypto to tell us when `OPENSSL_cleanup()` runs; true when it will.
///
/// libcrypto keeps the handler's address until the process ends, so the code holding it must never
/// be unmapped. It is kept mapped here by `dlopen(RTLD_NOLOAD | RTLD_NODELETE)` of the object that
/// holds this function: a no-op for libasyncjob.so, which is linked `-z nodelete` (see build.rs), and
/// what keeps a plugin that links libasyncjob.a from leaving a dangling handler behind. Where the
/// object cannot be found (this code in the main program, say) nothing is registered and the call
/// is simply made every time.
#[cfg(target_os = "linux")]
fn watch_cleanup() -> bool {
    let at_exit = lookup(c"OPENSSL_atexit");
    if at_exit.is_null() {
        return false;
    }
    let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the loaded objects' tables and fills `info`.
    let found = unsafe { libc::dladdr(on_openssl_cleanup as *const c_void, info.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled by dladdr when it succeeds.
    let info = unsafe { info.assume_init() };
    if found == 0 || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: the object's path from dladdr, NUL-terminated; RTLD_NOLOAD never loads anything.
    let pinned = unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
    if pinned.is_null() {
        return false;
    }
    // SAFETY: libcrypto's public OPENSSL_atexit (<openssl/crypto.h>) of exactly this signature; the
    // handler stays mapped (above) and only stores to an atomic.
    unsafe { std::mem::transmute::<*mut c_void, AtExitFn>(at_exit)(on_openssl_cleanup) == 1 }
}

#[cfg(not(target_os = "linux"))]
fn watch_cleanup() -> bool {
    false
}

/// `ERR_raise(ERR_LIB_ASYNC, reason)` when libcrypto is present.
fn raise(reason: c_int, func: &'static std::ffi::CStr, line: u32) {
    let c = crypto();
    if let (Some(new), Some(debug), Some(set)) = (c.err_new, c.err_set_debug, c.err_set_error) {
        // SAFETY: the three calls are what ERR_raise expands to; the strings are NUL-terminated
        // statics and a NULL format means "no extra data".
        unsafe {
            new();
            debug(
                c"asyncjob-capi/src/ffi.rs".as_ptr(),
                line as c_int,
                func.as_ptr(),
            );
            set(ERR_LIB_ASYNC, reason, ptr::null());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ASYNC_WAIT_CTX

/// What an `ASYNC_WAIT_CTX *` points to: a handle on an `asyncjob::WaitCtx`.
///
/// The allocation outlives every use C can make of the pointer. It is counted by `refs`: one for the
/// application (until `ASYNC_WAIT_CTX_free`) and one for the `KeepAlive` that always sits in the
/// shared context's callback slot. That slot is dropped last when the shared context dies, after
/// the fd cleanups have run, so the pointer handed to those cleanups is still valid, even when the
/// context outlived `ASYNC_WAIT_CTX_free` because a paused job still held it.
pub struct AsyncWaitCtx {
    /// Owned (one count of the shared context) until `ASYNC_WAIT_CTX_free`; afterwards a borrowed
    /// copy, valid because this allocation dies no later than the shared context (see above).
    ctx: ManuallyDrop<WaitCtx>,
    refs: Cell<usize>,
    user_freed: Cell<bool>,
    /// Set while the shared context runs its fd cleanups on the way out; calls on the pointer from
    /// inside a cleanup then see an unusable context and fail cleanly.
    dying: Cell<bool>,
}

/// One count on an `AsyncWaitCtx` allocation.
struct KeepAlive(*mut AsyncWaitCtx);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        // SAFETY: a KeepAlive holds one of the counts, so the allocation is live.
        unsafe { release(self.0) }
    }
}

/// Drops one count of a wait ctx allocation, freeing it at zero.
///
/// # Safety
///
/// `p` is a live `AsyncWaitCtx` allocation and the caller gives up one of its counts.
unsafe fn release(p: *mut AsyncWaitCtx) {
    // SAFETY: live per the contract; only Cell fields are touched through the shared reference.
    let last = unsafe {
        let refs = &(*p).refs;
        refs.set(refs.get() - 1);
        refs.get() == 0
    };
    if last {
        // SAFETY: allocated by Box in ASYNC_WAIT_CTX_new and no count is left. `ctx` is not
        // dropped (ManuallyDrop): its count was given up in ASYNC_WAIT_CTX_free.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// The C callback and its argument, stored in the shared context's callback slot together with the
/// allocation's keep-alive.
struct CCallback {
    func: Option<CallbackFn>,
    arg: *mut c_void,
    keep: KeepAlive,
}

impl WaitCallback for CCallback {
    fn call(&self) -> i32 {
        match self.func {
            // SAFETY: the application registered this function with this argument.
            Some(f) => unsafe { f(self.arg) },
            None => 0,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The context behind a C pointer, or None for NULL or a context that is being torn down.
///
/// # Safety
///
/// `p` is NULL or a pointer from `ASYNC_WAIT_CTX_new` whose allocation is live, which holds for any
/// pointer the application has not freed and for any pointer a live job was started with.
unsafe fn wait_ctx<'a>(p: *mut AsyncWaitCtx) -> Option<&'a WaitCtx> {
    // SAFETY: per the contract.
    let c = unsafe { p.as_ref()? };
    if c.dying.get() {
        return None;
    }
    Some(&c.ctx)
}

fn install_callback(
    p: *mut AsyncWaitCtx,
    ctx: &WaitCtx,
    func: Option<CallbackFn>,
    arg: *mut c_void,
) {
    // SAFETY: the caller holds a live pointer; the new count is handed to the KeepAlive.
    unsafe { (*p).refs.set((*p).refs.get() + 1) };
    let cb = CCallback {
        func,
        arg,
        keep: KeepAlive(p),
    };
    // The replaced callback drops its own count; ours was added first, so the total never reaches 0.
    ctx.set_callback(Some(Rc::new(cb)));
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_WAIT_CTX_new() -> *mut AsyncWaitCtx {
    let p = Box::into_raw(Box::new(AsyncWaitCtx {
        ctx: ManuallyDrop::new(WaitCtx::new()),
        refs: Cell::new(1),
        user_freed: Cell::new(false),
        dying: Cell::new(false),
    }));
    // SAFETY: just allocated.
    let ctx = unsafe { &(*p).ctx };
    install_callback(p, ctx, None, ptr::null_mut());
    p
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_free(p: *mut AsyncWaitCtx) {
    if p.is_null() {
        return;
    }
    // SAFETY: a pointer from ASYNC_WAIT_CTX_new, not freed yet by the application (a second free
    // while the allocation still lives, e.g. from inside a cleanup, is caught by `user_freed`).
    let owned = unsafe {
        if (*p).user_freed.replace(true) {
            return;
        }
        // Our count of the shared context moves into `owned`; the field stays as a borrowed copy.
        ptr::read(&*(*p).ctx)
    };
    // SAFETY: the application's count, given up once.
    unsafe { release(p) };
    // If no paused job holds the context, this runs the fd cleanups and then frees `p`.
    drop(owned);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_set_wait_fd(
    p: *mut AsyncWaitCtx,
    key: *const c_void,
    fd: AsyncFd,
    custom_data: *mut c_void,
    cleanup: Option<CleanupFn>,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_set_wait_fd",
            line!(),
        );
        return 0;
    };
    let cleanup = cleanup.map(|f| -> asyncjob::FdCleanup {
        Box::new(move |key: WaitKey, fd: AsyncFd, data: *mut c_void| {
            // SAFETY: cleanups run only while the shared context is dropped, before its callback
            // slot (and with it our keep-alive) goes, so `p` is live. From here on calls on `p`
            // fail cleanly. `f` is the application's cleanup for this fd.
            unsafe {
                (*p).dying.set(true);
                f(p, key.as_ptr(), fd, data);
            }
        })
    });
    ctx.set_wait_fd(WaitKey::from_ptr(key), fd, custom_data, cleanup);
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_get_fd(
    p: *mut AsyncWaitCtx,
    key: *const c_void,
    fd: *mut AsyncFd,
    custom_data: *mut *mut c_void,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_get_fd",
            line!(),
        );
        return 0;
    };
    let Some((found_fd, data)) = ctx.fd(WaitKey::from_ptr(key)) else {
        return 0;
    };
    // SAFETY: NULL outputs are skipped; others are the caller's writable locations.
    unsafe {
        if let Some(out) = fd.as_mut() {
            *out = found_fd;
        }
        if let Some(out) = custom_data.as_mut() {
            *out = data;
        }
    }
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_get_all_fds(
    p: *mut AsyncWaitCtx,
    fd: *mut AsyncFd,
    numfds: *mut usize,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_get_all_fds",
            line!(),
        );
        return 0;
    };
    if numfds.is_null() {
        // Without the count the caller cannot know how much was written: refuse.
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_get_all_fds",
            line!(),
        );
        return 0;
    }
    let count = ctx.fd_count();
    if !fd.is_null() && count > 0 {
        // SAFETY: as in OpenSSL, a non-NULL array must have room for every fd (the caller sizes it
        // with a first call that passes NULL).
        let out = unsafe { std::slice::from_raw_parts_mut(fd, count) };
        ctx.copy_all_fds(out);
    }
    // SAFETY: checked non-NULL above; the caller's writable location.
    unsafe { *numfds = count };
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_get_changed_fds(
    p: *mut AsyncWaitCtx,
    addfd: *mut AsyncFd,
    numaddfds: *mut usize,
    delfd: *mut AsyncFd,
    numdelfds: *mut usize,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_get_changed_fds",
            line!(),
        );
        return 0;
    };
    if numaddfds.is_null() || numdelfds.is_null() {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_get_changed_fds",
            line!(),
        );
        return 0;
    }
    let (nadd, ndel) = ctx.changed_counts();
    // SAFETY: as in OpenSSL, non-NULL arrays have room for the counts a NULL-array call reported.
    let (add, del) = unsafe {
        (
            (!addfd.is_null()).then(|| std::slice::from_raw_parts_mut(addfd, nadd)),
            (!delfd.is_null()).then(|| std::slice::from_raw_parts_mut(delfd, ndel)),
        )
    };
    ctx.copy_changed_fds(add, del);
    // SAFETY: checked non-NULL above.
    unsafe {
        *numaddfds = nadd;
        *numdelfds = ndel;
    }
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_clear_fd(
    p: *mut AsyncWaitCtx,
    key: *const c_void,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_clear_fd",
            line!(),
        );
        return 0;
    };
    c_int::from(ctx.clear_fd(WaitKey::from_ptr(key)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_set_callback(
    p: *mut AsyncWaitCtx,
    callback: Option<CallbackFn>,
    callback_arg: *mut c_void,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        return 0;
    };
    install_callback(p, ctx, callback, callback_arg);
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_get_callback(
    p: *mut AsyncWaitCtx,
    callback: *mut Option<CallbackFn>,
    callback_arg: *mut *mut c_void,
) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_get_callback",
            line!(),
        );
        return 0;
    };
    let Some(cb) = ctx.callback() else {
        return 0;
    };
    let Some(CCallback {
        func: Some(func),
        arg,
        ..
    }) = cb.as_any().downcast_ref::<CCallback>()
    else {
        return 0;
    };
    // SAFETY: NULL outputs are skipped; others are the caller's writable locations.
    unsafe {
        if let Some(out) = callback.as_mut() {
            *out = Some(*func);
        }
        if let Some(out) = callback_arg.as_mut() {
            *out = *arg;
        }
    }
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_set_status(p: *mut AsyncWaitCtx, status: c_int) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    let Some(ctx) = (unsafe { wait_ctx(p) }) else {
        raise(
            ERR_R_PASSED_NULL_PARAMETER,
            c"ASYNC_WAIT_CTX_set_status",
            line!(),
        );
        return 0;
    };
    ctx.set_status(status);
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_WAIT_CTX_get_status(p: *mut AsyncWaitCtx) -> c_int {
    // SAFETY: the application's pointer (see `wait_ctx`).
    match unsafe { wait_ctx(p) } {
        Some(ctx) => ctx.status(),
        None => {
            raise(
                ERR_R_PASSED_NULL_PARAMETER,
                c"ASYNC_WAIT_CTX_get_status",
                line!(),
            );
            0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// Args up to this size are copied onto the job's own stack; larger ones into a heap buffer.
const INLINE_ARGS: usize = 256;

/// Malloc-like alignment for the copy, as OpenSSL's `OPENSSL_malloc` copy has.
#[repr(C, align(16))]
struct InlineArgs([MaybeUninit<u8>; INLINE_ARGS]);

/// The job body for C: copy `size` bytes of `args` (on the job's stack when small), then call `func`.
/// `None`, without calling `func`, when the heap copy of large args cannot be allocated (or its size
/// overflows): OpenSSL's `ASYNC_start_job` then returns `ASYNC_ERR` as well.
fn job_body(
    func: JobFn,
    args: *const c_void,
    size: usize,
) -> impl FnOnce() -> state::JobResult + 'static {
    move || {
        if args.is_null() || size == 0 {
            // SAFETY: the application's job function; NULL args as in OpenSSL 3.0.19 and 3.6.
            return Some(unsafe { func(ptr::null_mut()) });
        }
        if size <= SMALL_ARGS {
            let mut buf = [MaybeUninit::<u128>::uninit(); SMALL_ARGS / 16];
            let dst = buf.as_mut_ptr().cast::<u8>();
            // SAFETY: asyncjob::start runs this closure before it returns (it is only handed back
            // unrun on NO_JOBS, and then dropped), so `args` is still the caller's valid buffer of
            // `size` bytes; `dst` has room for SMALL_ARGS >= size bytes. Then the job function.
            return Some(unsafe {
                copy_args(args.cast::<u8>(), dst, size);
                func(dst.cast())
            });
        }
        // SAFETY: as above.
        unsafe { call_with_copy(func, args, size) }
    }
}

/// Args up to this size are copied in the job body itself; larger ones by `call_with_copy`.
const SMALL_ARGS: usize = 32;

/// `func` with a copy of the `size` bytes at `args`: on this stack when small, else in a heap
/// buffer; `None` without calling `func` when that buffer cannot be had. Out of line, so that a job
/// without args does not set up the frame of the inline copy.
///
/// # Safety
///
/// `args` points to `size` readable bytes; `func` is the application's job function.
#[inline(never)]
unsafe fn call_with_copy(func: JobFn, args: *const c_void, size: usize) -> state::JobResult {
    if size <= INLINE_ARGS {
        let mut buf = InlineArgs([MaybeUninit::uninit(); INLINE_ARGS]);
        let dst = buf.0.as_mut_ptr().cast::<u8>();
        // SAFETY: `args` has `size` bytes (the caller's promise); `dst` has room for
        // INLINE_ARGS >= size bytes. Then the job function. (Sizes up to SMALL_ARGS never get here,
        // so `copy_args`'s short cases would be dead code.)
        return Some(unsafe {
            ptr::copy_nonoverlapping(args.cast::<u8>(), dst, size);
            func(dst.cast())
        });
    }
    // Fallible: a size no allocation can satisfy (SIZE_MAX, say) must not abort the process.
    let mut heap: Vec<MaybeUninit<u128>> = Vec::new();
    heap.try_reserve_exact(size.div_ceil(16)).ok()?;
    let dst = heap.as_mut_ptr().cast::<u8>();
    // SAFETY: as above, with a heap buffer of at least `size` bytes, 16-byte aligned.
    Some(unsafe {
        ptr::copy_nonoverlapping(args.cast::<u8>(), dst, size);
        func(dst.cast())
    })
}

/// `ptr::copy_nonoverlapping(src, dst, size)` without the call to `memcpy` for 8 to 32 bytes (a
/// pointer or a small struct, what callers usually pass): a pair of loads and a pair of stores that
/// overlap in the middle. A 16-byte args copy then adds 14 instructions to a start instead of 21
/// (callgrind).
///
/// # Safety
///
/// As for `ptr::copy_nonoverlapping`.
#[inline(always)]
unsafe fn copy_args(src: *const u8, dst: *mut u8, size: usize) {
    // SAFETY: both ranges are `size` bytes (the caller's promise) and every access below lies in
    // them: `size - 8` (or `- 16`) is in range because `size` is at least 8 (or 16).
    unsafe {
        if (8..=16).contains(&size) {
            let head = src.cast::<u64>().read_unaligned();
            let tail = src.add(size - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(head);
            dst.add(size - 8).cast::<u64>().write_unaligned(tail);
        } else if (16..=32).contains(&size) {
            let head = src.cast::<u128>().read_unaligned();
            let tail = src.add(size - 16).cast::<u128>().read_unaligned();
            dst.cast::<u128>().write_unaligned(head);
            dst.add(size - 16).cast::<u128>().write_unaligned(tail);
        } else {
            ptr::copy_nonoverlapping(src, dst, size);
        }
    }
}

// On x86_64 Linux the exported `ASYNC_start_job` and `ASYNC_pause_job` are the thunks of `entry`,
// which call these for everything but a resume's and a pause's switch.
#[cfg_attr(not(split_entry_points), unsafe(no_mangle))]
pub unsafe extern "C" fn ASYNC_start_job(
    job: *mut *mut c_void,
    p: *mut AsyncWaitCtx,
    ret: *mut c_int,
    func: Option<JobFn>,
    args: *mut c_void,
    size: usize,
) -> c_int {
    if job.is_null() {
        raise(ERR_R_PASSED_NULL_PARAMETER, c"ASYNC_start_job", line!());
        return ASYNC_ERR;
    }
    // SAFETY: non-NULL, the caller's job pointer.
    let current = unsafe { *job };
    if current.is_null() {
        // SAFETY: the caller's arguments, `job` not NULL and `*job` NULL.
        return unsafe { start_job_new(job, p, ret, func, args, size) };
    }
    if !crypto_alive() {
        return ASYNC_ERR;
    }
    // Resume: func, args, size and ctx are ignored, as in OpenSSL.
    let outcome = state::resume(current as usize);
    // SAFETY: the caller's pointers, `job` not NULL.
    unsafe { report_outcome(job, ret, outcome) }
}

/// `ASYNC_start_job` with `*job == NULL` (`job` itself not NULL); also called by the x86_64 Linux
/// entry thunk (`entry`), which tells starts from resumes itself.
///
/// # Safety
///
/// As for `ASYNC_start_job`, with `job` not NULL and `*job` NULL.
pub(crate) unsafe extern "C" fn start_job_new(
    job: *mut *mut c_void,
    p: *mut AsyncWaitCtx,
    ret: *mut c_int,
    func: Option<JobFn>,
    args: *mut c_void,
    size: usize,
) -> c_int {
    if !crypto_alive() {
        return ASYNC_ERR;
    }
    let Some(func) = func else {
        raise(ERR_R_PASSED_NULL_PARAMETER, c"ASYNC_start_job", line!());
        return ASYNC_ERR;
    };
    let wc = if p.is_null() {
        None
    } else {
        // SAFETY: the application's ctx pointer (see `wait_ctx`). Cloned so that no reference
        // into its allocation is held while the job runs (the job may free the ctx).
        match unsafe { wait_ctx(p) } {
            Some(ctx) => Some(ctx.clone()),
            None => {
                raise(ERR_R_PASSED_INVALID_ARGUMENT, c"ASYNC_start_job", line!());
                return ASYNC_ERR;
            }
        }
    };
    let outcome = state::start(wc.as_ref(), job_body(func, args, size));
    // SAFETY: the caller's pointers, `job` not NULL.
    unsafe { report_outcome(job, ret, outcome) }
}

/// What `ASYNC_start_job` returns and writes for `outcome`.
///
/// # Safety
///
/// `job` is the caller's non-NULL job pointer, `ret` its (possibly NULL) result pointer.
#[inline(always)]
pub(crate) unsafe fn report_outcome(
    job: *mut *mut c_void,
    ret: *mut c_int,
    outcome: Outcome,
) -> c_int {
    // The two outcomes of a call that worked first, each its own test; the rest out of line.
    if let Outcome::Finished(value) = outcome {
        // SAFETY: the caller's locations; a NULL `ret` discards the value (OpenSSL crashes).
        unsafe {
            if let Some(r) = ret.as_mut() {
                *r = value;
            }
            *job = ptr::null_mut();
        }
        return ASYNC_FINISH;
    }
    if let Outcome::Paused(id) = outcome {
        // SAFETY: the caller's job pointer.
        unsafe { *job = id as *mut c_void };
        return ASYNC_PAUSE;
    }
    start_job_failed(outcome)
}

/// What `ASYNC_start_job` returns for an outcome other than a finish or a pause (nothing is written).
#[cold]
#[inline(never)]
fn start_job_failed(outcome: Outcome) -> c_int {
    match outcome {
        Outcome::Finished(_) | Outcome::Paused(_) => unreachable!("handled by ASYNC_start_job"),
        Outcome::NoJobs | Outcome::Failed(ErrorKind::NotCapable) => ASYNC_NO_JOBS,
        Outcome::ArgsNotCopied => {
            // As OpenSSL 3.0 when its malloc of the args copy fails: the job went back to the pool,
            // `*job` and `*ret` are unchanged.
            raise(ERR_R_MALLOC_FAILURE, c"ASYNC_start_job", line!());
            ASYNC_ERR
        }
        Outcome::Unknown => {
            // Finished (stale), forged, or paused on another thread: refused, nothing changed.
            raise(ERR_R_PASSED_INVALID_ARGUMENT, c"ASYNC_start_job", line!());
            ASYNC_ERR
        }
        Outcome::Failed(ErrorKind::Nested) => {
            // Inside a running job, where OpenSSL corrupts the running job. asyncjob refused before
            // touching anything: a paused job passed in `*job` stays paused.
            raise(
                ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                c"ASYNC_start_job",
                line!(),
            );
            ASYNC_ERR
        }
        Outcome::Failed(ErrorKind::Other) => {
            raise(ASYNC_R_INIT_FAILED, c"ASYNC_start_job", line!());
            ASYNC_ERR
        }
    }
}

/// `asyncjob::pause` unwinds only when a paused job's handle is dropped, which this library never
/// does (jobs paused at thread exit are leaked); should it ever happen, the "C" boundary aborts
/// rather than unwinding through the application's frames.
#[cfg_attr(not(split_entry_points), unsafe(no_mangle))]
#[cfg_attr(split_entry_points, allow(dead_code))]
pub extern "C" fn ASYNC_pause_job() -> c_int {
    asyncjob::pause();
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_get_current_job() -> *mut c_void {
    if !crypto_alive() {
        return ptr::null_mut();
    }
    asyncjob::current_job().map_or(ptr::null_mut(), |j| j.as_ptr().cast_mut())
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_get_wait_ctx(job: *mut c_void) -> *mut AsyncWaitCtx {
    // The pointer is only compared, never dereferenced: unknown handles give NULL.
    state::wait_ctx_of(job as usize).map_or(ptr::null_mut(), |ctx| c_handle_of(&ctx))
}

/// The `ASYNC_WAIT_CTX *` behind a context from `ASYNC_WAIT_CTX_new`: its callback slot always holds
/// a `CCallback`, whose keep-alive names the allocation. NULL for a context made elsewhere (none
/// reaches a job started through this API).
fn c_handle_of(ctx: &WaitCtx) -> *mut AsyncWaitCtx {
    ctx.callback()
        .and_then(|cb| cb.as_any().downcast_ref::<CCallback>().map(|c| c.keep.0))
        .unwrap_or(ptr::null_mut())
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_block_pause() {
    asyncjob::block_pause().leak();
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_unblock_pause() {
    asyncjob::unblock_pause();
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_is_capable() -> c_int {
    c_int::from(asyncjob::is_capable())
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_init_thread(max_size: usize, init_size: usize) -> c_int {
    if !crypto_alive() {
        return 0;
    }
    match asyncjob::init_thread(max_size, init_size) {
        Ok(()) => 1,
        Err(asyncjob::Error::InvalidPoolSize { .. }) => {
            raise(ASYNC_R_INVALID_POOL_SIZE, c"ASYNC_init_thread", line!());
            0
        }
        Err(_) => {
            raise(ASYNC_R_INIT_FAILED, c"ASYNC_init_thread", line!());
            0
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_cleanup_thread() {
    if !crypto_alive() {
        return;
    }
    // Paused jobs stay valid and resumable (they are in this thread's table); OpenSSL leaks them.
    let _ = asyncjob::cleanup_thread();
}

// ---------------------------------------------------------------------------------------------
// Stack allocators (OpenSSL 3.2+)

/// The stack size OpenSSL asks its allocator for.
const STACK_REQUEST: usize = 32768;

/// Our default allocator, as `ASYNC_get_mem_functions` reports it. Jobs use asyncjob's guarded stacks
/// until the application installs its own pair; these two are for applications that wrap them.
unsafe extern "C" fn default_stack_alloc(num: *mut usize) -> *mut c_void {
    // SAFETY: `num` is the caller's size in/out parameter (NULL gives NULL); malloc of that size.
    unsafe {
        match num.as_ref() {
            Some(&n) if n > 0 => libc::malloc(n),
            _ => ptr::null_mut(),
        }
    }
}

unsafe extern "C" fn default_stack_free(addr: *mut c_void) {
    // SAFETY: memory from default_stack_alloc (malloc) or NULL.
    unsafe { libc::free(addr) }
}

static ALLOC_FN: AtomicUsize = AtomicUsize::new(0);
static FREE_FN: AtomicUsize = AtomicUsize::new(0);

fn current_mem_functions() -> (AllocFn, FreeFn) {
    let a = ALLOC_FN.load(Ordering::Acquire);
    let f = FREE_FN.load(Ordering::Acquire);
    // SAFETY: non-zero values were stored from function pointers of exactly these types.
    unsafe {
        (
            if a == 0 {
                default_stack_alloc
            } else {
                std::mem::transmute::<usize, AllocFn>(a)
            },
            if f == 0 {
                default_stack_free
            } else {
                std::mem::transmute::<usize, FreeFn>(f)
            },
        )
    }
}

/// The application's allocator pair as an asyncjob stack allocator.
struct CStackAllocator {
    alloc: AllocFn,
    free: FreeFn,
}

// SAFETY: the C contract of ASYNC_stack_alloc_fn: the returned memory is read/write for `*num`
// bytes and owned by us until passed to the free function. The functions are plain C, callable from
// any thread. Such memory has no guard region below it: this is the exception the trait allows for
// allocators whose installer guarantees that no job outgrows its stack, which is exactly the burden
// `ASYNC_set_mem_functions` puts on its C callers in OpenSSL (the jobs run C code the caller wrote).
unsafe impl StackAllocator for CStackAllocator {
    fn allocate(&self) -> Option<StackMemory> {
        let mut num = STACK_REQUEST;
        // SAFETY: the application's allocator with a valid in/out size.
        let base = unsafe { (self.alloc)(&mut num) };
        let base = NonNull::new(base.cast::<u8>())?;
        if num == 0 {
            // SAFETY: the allocator's own memory, handed straight back.
            unsafe { (self.free)(base.as_ptr().cast()) };
            return None;
        }
        Some(StackMemory { base, size: num })
    }

    fn release(&self, stack: StackMemory) {
        // SAFETY: memory this allocator returned, no longer used by any job.
        unsafe { (self.free)(stack.base.as_ptr().cast()) }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn ASYNC_set_mem_functions(
    alloc_fn: Option<AllocFn>,
    free_fn: Option<FreeFn>,
) -> c_int {
    // OpenSSL calls it and ignores the result.
    let _ = crypto_alive();
    if cfg!(windows) {
        return 0;
    }
    if alloc_fn.is_none() && free_fn.is_none() {
        return 1;
    }
    let (cur_alloc, cur_free) = current_mem_functions();
    let alloc = alloc_fn.unwrap_or(cur_alloc);
    let free = free_fn.unwrap_or(cur_free);
    match asyncjob::set_stack_allocator(Box::new(CStackAllocator { alloc, free })) {
        Ok(()) => {
            ALLOC_FN.store(alloc as usize, Ordering::Release);
            FREE_FN.store(free as usize, Ordering::Release);
            1
        }
        Err(_) => 0,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ASYNC_get_mem_functions(
    alloc_fn: *mut Option<AllocFn>,
    free_fn: *mut Option<FreeFn>,
) {
    let (alloc, free) = if cfg!(windows) {
        (None, None)
    } else {
        let (a, f) = current_mem_functions();
        (Some(a), Some(f))
    };
    // SAFETY: NULL outputs are skipped; others are the caller's writable locations.
    unsafe {
        if let Some(out) = alloc_fn.as_mut() {
            *out = alloc;
        }
        if let Some(out) = free_fn.as_mut() {
            *out = free;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C-unwind" fn add_bytes(arg: *mut c_void) -> c_int {
        // SAFETY: the tests pass 4 bytes or NULL.
        unsafe {
            match (arg as *const [u8; 4]).as_ref() {
                Some(b) => b.iter().map(|&x| c_int::from(x)).sum(),
                None => -1,
            }
        }
    }

    #[test]
    fn args_are_copied_and_null_for_size_zero() {
        let bytes = [1u8, 2, 3, 4];
        let f = job_body(add_bytes, bytes.as_ptr().cast(), 4);
        assert_eq!(f(), Some(10));
        assert_eq!(job_body(add_bytes, bytes.as_ptr().cast(), 0)(), Some(-1));
        assert_eq!(job_body(add_bytes, ptr::null(), 4)(), Some(-1));
    }

    #[test]
    fn args_of_every_size_are_copied_exactly() {
        thread_local! {
            static LEN: Cell<usize> = const { Cell::new(0) };
        }
        /// A hash of the `LEN` bytes at `arg`, folding in each byte's position.
        fn hash(bytes: &[u8]) -> c_int {
            bytes.iter().enumerate().fold(17, |h: c_int, (i, &b)| {
                h.wrapping_mul(31)
                    .wrapping_add(c_int::from(b) ^ (i as c_int))
            })
        }
        unsafe extern "C-unwind" fn hash_args(arg: *mut c_void) -> c_int {
            // SAFETY: the test passes LEN bytes.
            hash(unsafe { std::slice::from_raw_parts(arg.cast::<u8>(), LEN.get()) })
        }
        for size in 1..=INLINE_ARGS + 40 {
            // An allocation of exactly `size` bytes, so that Valgrind and ASan see any read past it.
            let source: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            LEN.set(size);
            let copied = job_body(hash_args, source.as_ptr().cast(), size)();
            assert_eq!(copied, Some(hash(&source)), "{size} bytes");
        }
    }

    #[test]
    fn args_too_large_to_copy_give_none_without_calling_the_job() {
        let bytes = [1u8, 2, 3, 4];
        // `add_bytes` would return 10: None means it was not called.
        for size in [usize::MAX, usize::MAX / 2 + 1, 1 << 62] {
            assert_eq!(job_body(add_bytes, bytes.as_ptr().cast(), size)(), None);
        }
    }

    #[test]
    fn wait_ctx_lives_until_free_and_callbacks_round_trip() {
        unsafe extern "C" fn cb(arg: *mut c_void) -> c_int {
            arg as usize as c_int
        }
        let p = ASYNC_WAIT_CTX_new();
        // SAFETY: a live ctx and valid outputs.
        unsafe {
            assert_eq!(
                ASYNC_WAIT_CTX_set_callback(p, Some(cb), 9 as *mut c_void),
                1
            );
            let mut f: Option<CallbackFn> = None;
            let mut a = ptr::null_mut();
            assert_eq!(ASYNC_WAIT_CTX_get_callback(p, &mut f, &mut a), 1);
            assert_eq!(f.map(|f| f(a)), Some(9));
            assert_eq!((*p).refs.get(), 2);
            ASYNC_WAIT_CTX_free(p);
        }
    }
}

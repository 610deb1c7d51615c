//! Each job's own default `OSSL_LIB_CTX`, as OpenSSL's `ASYNC_start_job` keeps it with
//! `OSSL_LIB_CTX_set0_default` (reference §3): a switch hook that saves the job's default when it
//! stops and gives the caller its own back, and the reverse when the job runs again.
//!
//! Reading the thread's default is the hook's main cost. libcrypto's only public reader,
//! `OSSL_LIB_CTX_set0_default(NULL)`, costs about 60 instructions (a run-once check and a
//! `pthread_getspecific` behind two calls), twice per round trip. libcrypto 3.0 to 3.4 keep the
//! default in a pthread key of their own, NULL meaning the global default. When that key can be
//! found beyond doubt (see [`find_default_key`]), the hook reads it directly, the same value
//! through the same `pthread_getspecific`, for about a quarter of the cost; otherwise, and after
//! `OPENSSL_cleanup()` deleted the key, it calls libcrypto. Stores always go through libcrypto.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use asyncjob::SwitchHook;

/// `OSSL_LIB_CTX *OSSL_LIB_CTX_set0_default(OSSL_LIB_CTX *)`
pub(crate) type Set0DefaultFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
/// `OSSL_LIB_CTX *OSSL_LIB_CTX_get0_global_default(void)`
pub(crate) type GlobalDefaultFn = unsafe extern "C" fn() -> *mut c_void;

/// No key: read the default through libcrypto.
const NO_KEY: usize = usize::MAX;
/// libcrypto's pthread key for the thread's default, or `NO_KEY`.
static DEFAULT_KEY: AtomicUsize = AtomicUsize::new(NO_KEY);

/// The hook to install, with the direct read set up when libcrypto's key is found and
/// `cleanup_watched` (`forget_default_key` will be called from `OPENSSL_cleanup()`).
pub(crate) fn hook(
    set0: Set0DefaultFn,
    global: Option<GlobalDefaultFn>,
    cleanup_watched: bool,
) -> LibCtxHook {
    let global = global.map_or(0, |global_default| {
        // SAFETY: libcrypto's public function, of this signature, without preconditions.
        unsafe { global_default() as usize }
    });
    if global != 0 && cleanup_watched {
        if let Some(key) = find_default_key(set0, global) {
            DEFAULT_KEY.store(key, Ordering::Relaxed);
        }
    }
    LibCtxHook { set0, global }
}

/// Stop reading libcrypto's key: `OPENSSL_cleanup()` deletes it (heard of only on Linux).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn forget_default_key() {
    DEFAULT_KEY.store(NO_KEY, Ordering::Relaxed);
}

/// Whether the hook reads libcrypto's key directly.
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
fn reads_key_directly() -> bool {
    DEFAULT_KEY.load(Ordering::Relaxed) != NO_KEY
}

/// Two addresses that no library context has, set as the calling thread's default for a moment.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static PROBES: [u8; 2] = [0; 2];

/// The one pthread key whose value on this thread follows `set0_default` exactly: it holds each of
/// two probe addresses after they are set, NULL after the global default is set, and the thread's
/// own default again after it is restored. Any doubt (no such key, or more than one) is `None`.
///
/// `set0_default` only stores the pointer it is given (3.0 to 3.6 never dereference it there), and
/// no other libcrypto call runs on this thread before the thread's own default is restored.
/// `pthread_getspecific` on a key never created reads glibc's per-thread table and returns NULL,
/// so the search is limited to glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn find_default_key(set0: Set0DefaultFn, global: usize) -> Option<usize> {
    // SAFETY: glibc's sysconf; no preconditions.
    let keys_max = unsafe { libc::sysconf(libc::_SC_THREAD_KEYS_MAX) };
    let keys_max = usize::try_from(keys_max).ok()?.min(4096);
    let read = |key: usize| -> usize {
        // SAFETY: see the function's comment: any key below PTHREAD_KEYS_MAX may be read in glibc.
        unsafe { libc::pthread_getspecific(key as libc::pthread_key_t) as usize }
    };
    // SAFETY: set0_default with NULL only reads the thread's default.
    let own = unsafe { set0(ptr::null_mut()) };
    let mut found = None;
    for probe in &PROBES {
        let probe = ptr::from_ref(probe).cast_mut().cast::<c_void>();
        // SAFETY: stores the probe as this thread's default, restored below before anything else.
        unsafe { set0(probe) };
        let mut holding = (0..keys_max).filter(|&key| read(key) == probe as usize);
        let key = holding.next();
        if key.is_none() || holding.next().is_some() || (found.is_some() && found != key) {
            found = None;
            break;
        }
        found = key;
    }
    // SAFETY: a library context libcrypto handed out; set0_default stores the global one as NULL.
    unsafe { set0(global as *mut c_void) };
    let global_is_null = found.is_some_and(|key| read(key) == 0);
    // SAFETY: the thread's own default, read above: everything is as before the search.
    unsafe { set0(own) };
    let restored = found.is_some_and(|key| {
        let value = read(key);
        (if value == 0 { global } else { value }) == own as usize
    });
    found.filter(|_| global_is_null && restored)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn find_default_key(_set0: Set0DefaultFn, _global: usize) -> Option<usize> {
    None
}

/// The switch hook. The job word is the job's saved default.
///
/// OpenSSL calls `set0_default(ctx)` on the way in and out of every run, each call a read and a
/// `pthread_setspecific`. Here each side reads the current default and stores only when the wanted
/// default differs. The thread's default after each side, and the defaults remembered, are the same
/// as OpenSSL's: storing the value already current changes nothing (`set0_default` maps the global
/// default to the NULL it keeps for it, and reading never returns NULL), so only the store that
/// would change it is made.
pub(crate) struct LibCtxHook {
    set0: Set0DefaultFn,
    /// `OSSL_LIB_CTX_get0_global_default()`, which the key's NULL stands for (0 when unknown, and
    /// then the key is never read).
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    global: usize,
}

impl LibCtxHook {
    /// The thread's current default `OSSL_LIB_CTX` (never NULL in OpenSSL 3.x).
    #[inline(always)]
    fn current(&self) -> usize {
        // Only glibc's key is ever found (`find_default_key`).
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let key = DEFAULT_KEY.load(Ordering::Relaxed);
            if key != NO_KEY {
                // SAFETY: the key libcrypto keeps the thread's default in (`find_default_key`), not
                // yet deleted: `OPENSSL_cleanup()` forgets it first.
                let value =
                    unsafe { libc::pthread_getspecific(key as libc::pthread_key_t) } as usize;
                return if value == 0 { self.global } else { value };
            }
        }
        // SAFETY: set0_default(NULL) only reads the thread's default.
        unsafe { (self.set0)(ptr::null_mut()) as usize }
    }

    /// Make `ctx` the thread's default; it was not current.
    #[inline(always)]
    fn install(&self, ctx: usize) {
        // SAFETY: `ctx` is a library context that set0_default handed out earlier.
        unsafe { (self.set0)(ctx as *mut c_void) };
    }
}

impl SwitchHook for LibCtxHook {
    fn enter(&self, job_word: usize, first_entry: bool) -> usize {
        // A new job runs with the caller's default; a resumed one gets its own back. Either way the
        // caller's current default is the token.
        let caller = self.current();
        if !first_entry && job_word != 0 && job_word != caller {
            self.install(job_word);
        }
        caller
    }

    fn leave(&self, caller_token: usize) -> usize {
        // The job's default as it left it is its new word; the caller gets its own back.
        let job = self.current();
        if job != caller_token {
            self.install(caller_token);
        }
        job
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;
    use std::ffi::{CStr, c_ulong};

    type NewFn = unsafe extern "C" fn() -> *mut c_void;
    type FreeFn = unsafe extern "C" fn(*mut c_void);
    type VersionFn = unsafe extern "C" fn() -> c_ulong;

    /// The system's libcrypto, loaded into this test process.
    fn libcrypto() -> *mut c_void {
        // SAFETY: loads the system libcrypto; its initialisers are its own.
        let handle = unsafe {
            libc::dlopen(
                c"libcrypto.so.3".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_GLOBAL,
            )
        };
        assert!(
            !handle.is_null(),
            "this test needs the system's libcrypto.so.3"
        );
        handle
    }

    fn symbol(handle: *mut c_void, name: &CStr) -> *mut c_void {
        // SAFETY: a handle from dlopen and a NUL-terminated name.
        let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
        assert!(!f.is_null(), "libcrypto has no {name:?}");
        f
    }

    #[test]
    fn the_direct_read_agrees_with_libcrypto_on_every_thread() {
        let handle = libcrypto();
        // SAFETY: libcrypto's public functions, of these signatures (<openssl/crypto.h>).
        let (set0, global_default, new, free, version) = unsafe {
            (
                std::mem::transmute::<*mut c_void, Set0DefaultFn>(symbol(
                    handle,
                    c"OSSL_LIB_CTX_set0_default",
                )),
                std::mem::transmute::<*mut c_void, GlobalDefaultFn>(symbol(
                    handle,
                    c"OSSL_LIB_CTX_get0_global_default",
                )),
                std::mem::transmute::<*mut c_void, NewFn>(symbol(handle, c"OSSL_LIB_CTX_new")),
                std::mem::transmute::<*mut c_void, FreeFn>(symbol(handle, c"OSSL_LIB_CTX_free")),
                std::mem::transmute::<*mut c_void, VersionFn>(symbol(
                    handle,
                    c"OpenSSL_version_num",
                )),
            )
        };
        // SAFETY: as above; no preconditions.
        let (global, version, a, b) = unsafe { (global_default(), version(), new(), new()) };
        assert!(!a.is_null() && !b.is_null());
        let read = || {
            // SAFETY: set0_default(NULL) only reads.
            unsafe { set0(ptr::null_mut()) as usize }
        };
        // SAFETY: `a` is a library context from OSSL_LIB_CTX_new.
        unsafe { set0(a) };
        let hook = hook(set0, Some(global_default), true);
        // The search left the thread's own default in place.
        assert_eq!(read(), a as usize);
        if version < 0x3050_0000 {
            // 3.0 to 3.4 keep the default in a pthread key of their own.
            assert!(
                reads_key_directly(),
                "key not found in libcrypto {version:#x}"
            );
        }
        for ctx in [b, global, a] {
            // SAFETY: library contexts libcrypto handed out.
            unsafe { set0(ctx) };
            assert_eq!(hook.current(), ctx as usize);
            assert_eq!(hook.current(), read());
        }
        // Another thread has its own default: the global one until it sets one.
        let (a, b, global) = (a as usize, b as usize, global as usize);
        let seen = std::thread::spawn(move || {
            let before = hook.current();
            // SAFETY: a library context libcrypto handed out.
            unsafe { set0(b as *mut c_void) };
            let after = hook.current();
            // SAFETY: as above.
            unsafe { set0(global as *mut c_void) };
            (before, after)
        })
        .join()
        .expect("the thread ends normally");
        assert_eq!(seen, (global, b));
        let hook = LibCtxHook { set0, global };
        assert_eq!(hook.current(), a, "this thread's default did not change");
        // Forgotten (as after OPENSSL_cleanup), reads go through libcrypto and agree.
        forget_default_key();
        assert!(!reads_key_directly());
        assert_eq!(hook.current(), a);
        // SAFETY: the global default back, then the two contexts freed (neither is a default).
        unsafe {
            set0(global as *mut c_void);
            free(a as *mut c_void);
            free(b as *mut c_void);
        }
    }
}

//! Wait contexts: how async-aware code inside a job tells the application what the job waits on.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::c_void;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use crate::notify::{Notifier, NotifyState};

/// The handle type a job waits on: a file descriptor on POSIX (`OSSL_ASYNC_FD` is an `int`).
#[cfg(unix)]
pub type AsyncFd = std::os::fd::RawFd;
/// The handle type a job waits on: a `HANDLE` on Windows (`OSSL_ASYNC_FD` is a `HANDLE`).
#[cfg(windows)]
pub type AsyncFd = std::os::windows::io::RawHandle;

/// The identity under which async-aware code files a wait fd (the `key` of
/// `ASYNC_WAIT_CTX_set_wait_fd`). Keys are compared as addresses, never dereferenced.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WaitKey(usize);

impl WaitKey {
    /// The key for an address the caller owns, usually a static or a field of its own state.
    pub fn from_ptr<T: ?Sized>(ptr: *const T) -> Self {
        WaitKey(ptr.cast::<u8>() as usize)
    }

    /// The key for the address of `value`.
    pub fn of<T: ?Sized>(value: &T) -> Self {
        Self::from_ptr(value as *const T)
    }

    /// A key made from a plain number, for callers that keep their own numbering.
    pub const fn from_addr(addr: usize) -> Self {
        WaitKey(addr)
    }

    /// The address this key stands for.
    pub fn addr(self) -> usize {
        self.0
    }

    /// The address this key stands for, as the C API's `const void *key`.
    pub fn as_ptr(self) -> *const c_void {
        self.0 as *const c_void
    }
}

/// Called once for a wait fd that is still registered when its context is dropped
/// (the `cleanup` argument of `ASYNC_WAIT_CTX_set_wait_fd`). It receives the key, the fd and the custom
/// data the fd was registered with. Fds removed by [`WaitCtx::clear_fd`] are never passed to it.
///
/// # Where it runs, and what it may do
///
/// A cleanup runs at most once, where the context's last handle is dropped:
/// * in the caller of `drop`, when the application drops it;
/// * in the caller of [`start`](crate::start), [`Job::resume`](crate::Job::resume) or of the
///   [`Job`](crate::Job)'s drop, when a job held the last handle and finished there; the job is
///   already back in the pool by then;
/// * inside a job, when the job's own code drops it, or when the job is dropped while paused and its
///   closure owned it (the job's stack is unwinding then).
///
/// It may call any asyncjob function: start jobs (inside a job that gives
/// [`Error::Nested`](crate::Error::Nested)), resume or drop paused jobs it owns, free the pool, drop
/// the last handle of another context (whose cleanups then run first), and [`pause`](crate::pause):
/// inside a job that pauses the job in the middle of the context's drop; it goes on when resumed,
/// and if the job is dropped instead, the cleanups not yet run still run. A cleanup cannot reach its
/// own context (no handle is left); one that owns a handle to its own context keeps it alive, as any
/// `Rc` cycle does, until the fd is cleared.
///
/// A cleanup that is never called (its fd was cleared) is dropped, and its destructors run where that
/// happens: in [`clear_fd`](WaitCtx::clear_fd) for an fd of the current round, in
/// [`pause`](crate::pause) when a round ends for an earlier round's fd, or in the context's drop. They
/// may use the context freely, outside any borrow.
///
/// # Panics
///
/// A panicking cleanup does not stop the others: every remaining cleanup still runs, newest first, and
/// the callback is dropped; then the first panic goes on in whoever dropped the last handle (the
/// caller of `drop`, `start`, `resume` or `Job`'s drop, where a finished job's result is then lost,
/// or the job's code). If the thread is already unwinding at that drop (a job that panicked or is
/// being dropped owned the handle), the panics are caught and dropped after the panic hook has
/// reported them, instead of aborting the process. A panic from the destructor of a cleanup that is
/// never called is handled the same way; from [`clear_fd`](WaitCtx::clear_fd) and
/// [`pause`](crate::pause) it propagates once the context is consistent again.
pub type FdCleanup = Box<dyn FnOnce(WaitKey, AsyncFd, *mut c_void)>;

/// The callback an async engine can use to wake the application instead of a wait fd
/// (`ASYNC_callback_fn` together with its argument). asyncjob stores it and never calls it.
///
/// Whoever calls it gets its panics, and may call it anywhere, inside a job too (it may pause the
/// job there; starting a job gives [`Error::Nested`](crate::Error::Nested)). It may change its own
/// context while it runs, even remove itself with [`WaitCtx::set_callback`]: the caller's `Rc` keeps
/// it alive until the call returns. A callback that owns a handle to its own context keeps the context
/// alive, as any `Rc` cycle does, until it is removed.
///
/// Its destructor runs where the context lets go of it: in [`WaitCtx::set_callback`] after the new
/// callback is stored (a panic there propagates, with the new callback in place; a destructor that
/// sets the callback again is the last writer and wins), or in the context's drop, after every fd
/// cleanup, where its panic is handled like a cleanup's (see [`FdCleanup`]).
pub trait WaitCallback: Any {
    /// Invoke the callback, as an engine would.
    fn call(&self) -> i32;
    /// The callback as `Any`, so that the code that installed it can recover its concrete type.
    fn as_any(&self) -> &dyn Any;
}

impl<F: Fn() -> i32 + 'static> WaitCallback for F {
    fn call(&self) -> i32 {
        self()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct WaitFd {
    key: WaitKey,
    fd: AsyncFd,
    custom_data: *mut c_void,
    cleanup: Option<FdCleanup>,
    added_this_round: bool,
    deleted: bool,
    /// Deleted in a round that has ended: being dropped by `start_new_round`.
    doomed: bool,
}

struct Shared {
    /// Oldest first; every listing walks it backwards because OpenSSL prepends, so its lists are
    /// newest first.
    fds: RefCell<Vec<WaitFd>>,
    num_added: Cell<usize>,
    num_deleted: Cell<usize>,
    callback: RefCell<Option<Rc<dyn WaitCallback>>>,
    status: Cell<i32>,
    /// The cross-thread wake-up, made when first asked for.
    notify: OnceCell<Arc<NotifyState>>,
    /// A notifier was handed out in the current round.
    awaits_notification: Cell<bool>,
}

/// A wait context (`ASYNC_WAIT_CTX`): the fds a paused job waits on, an optional wake-up callback and a
/// status, shared between the application and the async-aware code that runs inside a job.
///
/// `WaitCtx` is a shared handle: clones refer to the same context. A job started with a context keeps
/// a clone until it finishes, so a context can never be freed under a paused job (in C,
/// `ASYNC_WAIT_CTX_free` while a job still uses the context is a use-after-free). When the last clone
/// is dropped, the cleanup of every fd still registered runs, newest first, as `ASYNC_WAIT_CTX_free`
/// does. What cleanups may do, where they run and what happens when they panic is described at
/// [`FdCleanup`].
///
/// # Rounds
///
/// The lists of added and deleted fds ([`WaitCtx::changed_fds`]) describe the current *round*. A round
/// ends only when a paused job that uses this context is resumed: inside [`pause`](crate::pause), after
/// control comes back and before the job's code continues. Starting a job, pausing, finishing and any
/// query leave the round alone.
#[derive(Clone)]
pub struct WaitCtx(Rc<Shared>);

impl fmt::Debug for WaitCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitCtx")
            .field("fds", &self.all_fds())
            .field("changed", &self.changed_counts())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Default for WaitCtx {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitCtx {
    /// `ASYNC_STATUS_UNSUPPORTED`: the default status.
    pub const STATUS_UNSUPPORTED: i32 = 0;
    /// `ASYNC_STATUS_ERR`.
    pub const STATUS_ERR: i32 = 1;
    /// `ASYNC_STATUS_OK`.
    pub const STATUS_OK: i32 = 2;
    /// `ASYNC_STATUS_EAGAIN`.
    pub const STATUS_EAGAIN: i32 = 3;

    /// A new, empty context: no fds, no changes, no callback, status
    /// [`STATUS_UNSUPPORTED`](Self::STATUS_UNSUPPORTED) (`ASYNC_WAIT_CTX_new`).
    pub fn new() -> Self {
        WaitCtx(Rc::new(Shared {
            fds: RefCell::new(Vec::new()),
            num_added: Cell::new(0),
            num_deleted: Cell::new(0),
            callback: RefCell::new(None),
            status: Cell::new(Self::STATUS_UNSUPPORTED),
            notify: OnceCell::new(),
            awaits_notification: Cell::new(false),
        }))
    }

    /// Register `fd` under `key` (`ASYNC_WAIT_CTX_set_wait_fd`). The new fd comes first in every
    /// listing. There is no duplicate check: registering a key twice gives two entries, and lookups
    /// see the newer one.
    pub fn set_wait_fd(
        &self,
        key: WaitKey,
        fd: AsyncFd,
        custom_data: *mut c_void,
        cleanup: Option<FdCleanup>,
    ) {
        self.0.fds.borrow_mut().push(WaitFd {
            key,
            fd,
            custom_data,
            cleanup,
            added_this_round: true,
            deleted: false,
            doomed: false,
        });
        self.0.num_added.set(self.0.num_added.get() + 1);
    }

    /// The fd and custom data of the newest live entry for `key` (`ASYNC_WAIT_CTX_get_fd`).
    pub fn fd(&self, key: WaitKey) -> Option<(AsyncFd, *mut c_void)> {
        let fds = self.0.fds.borrow();
        fds.iter()
            .rev()
            .find(|e| !e.deleted && e.key == key)
            .map(|e| (e.fd, e.custom_data))
    }

    /// How many live fds there are: the count `ASYNC_WAIT_CTX_get_all_fds` reports.
    pub fn fd_count(&self) -> usize {
        self.0.fds.borrow().iter().filter(|e| !e.deleted).count()
    }

    /// Every live fd, newest first (`ASYNC_WAIT_CTX_get_all_fds`).
    pub fn all_fds(&self) -> Vec<AsyncFd> {
        self.live_newest_first(|_| true)
    }

    /// Copy the live fds, newest first, into `out` as far as it reaches; returns how many there are
    /// in total, like the count of `ASYNC_WAIT_CTX_get_all_fds`.
    pub fn copy_all_fds(&self, out: &mut [AsyncFd]) -> usize {
        let fds = self.0.fds.borrow();
        let live = fds.iter().rev().filter(|e| !e.deleted);
        let mut count = 0;
        for (i, e) in live.enumerate() {
            if let Some(slot) = out.get_mut(i) {
                *slot = e.fd;
            }
            count += 1;
        }
        count
    }

    /// The change counters of the current round, `(added, deleted)`: the counts
    /// `ASYNC_WAIT_CTX_get_changed_fds` reports.
    pub fn changed_counts(&self) -> (usize, usize) {
        (self.0.num_added.get(), self.0.num_deleted.get())
    }

    /// The fds added and the fds deleted in the current round, each newest first
    /// (`ASYNC_WAIT_CTX_get_changed_fds`). Asking does not start a new round.
    pub fn changed_fds(&self) -> (Vec<AsyncFd>, Vec<AsyncFd>) {
        (self.added_newest_first(), self.deleted_newest_first())
    }

    /// Copy the added and deleted fds of the current round into the given slices as far as they
    /// reach, newest first, and return the change counters like
    /// [`changed_counts`](Self::changed_counts). Allocates nothing.
    pub fn copy_changed_fds(
        &self,
        added: Option<&mut [AsyncFd]>,
        deleted: Option<&mut [AsyncFd]>,
    ) -> (usize, usize) {
        let fds = self.0.fds.borrow();
        if let Some(out) = added {
            let listed = fds.iter().rev().filter(|e| is_added(e)).map(|e| e.fd);
            for (slot, fd) in out.iter_mut().zip(listed) {
                *slot = fd;
            }
        }
        if let Some(out) = deleted {
            let listed = fds.iter().rev().filter(|e| is_deleted(e)).map(|e| e.fd);
            for (slot, fd) in out.iter_mut().zip(listed) {
                *slot = fd;
            }
        }
        self.changed_counts()
    }

    /// Remove the newest live entry for `key` (`ASYNC_WAIT_CTX_clear_fd`); false when there is none.
    ///
    /// An entry added in the current round disappears at once, as if it had never been added. An
    /// entry from an earlier round is marked deleted: it leaves the live lists, is reported as
    /// deleted until the round ends, and is then dropped. Either way its cleanup is never called.
    ///
    /// The cleanup of an entry removed at once is dropped before this returns, outside any borrow of
    /// the context, so its destructors may use the context; if one panics, the panic propagates
    /// from here, with the entry already gone.
    pub fn clear_fd(&self, key: WaitKey) -> bool {
        let removed = {
            let mut fds = self.0.fds.borrow_mut();
            let Some(index) = fds.iter().rposition(|e| !e.deleted && e.key == key) else {
                return false;
            };
            if fds[index].added_this_round {
                self.0.num_added.set(self.0.num_added.get() - 1);
                Some(fds.remove(index))
            } else {
                fds[index].deleted = true;
                self.0.num_deleted.set(self.0.num_deleted.get() + 1);
                None
            }
        };
        // Dropped outside the borrow: the cleanup closure's own destructors may run user code.
        drop(removed);
        true
    }

    /// Store a wake-up callback, or remove it with `None` (`ASYNC_WAIT_CTX_set_callback`).
    ///
    /// The old callback is dropped after the new one is stored, outside any borrow: its destructor
    /// may use the context, and if it panics the panic propagates with the new callback in place.
    pub fn set_callback(&self, callback: Option<Rc<dyn WaitCallback>>) {
        let old = self.0.callback.replace(callback);
        drop(old);
    }

    /// The stored wake-up callback (`ASYNC_WAIT_CTX_get_callback`).
    pub fn callback(&self) -> Option<Rc<dyn WaitCallback>> {
        self.0.callback.borrow().clone()
    }

    /// Set the status; any `i32` is kept as it is (`ASYNC_WAIT_CTX_set_status`).
    pub fn set_status(&self, status: i32) {
        self.0.status.set(status);
    }

    /// The status last set, [`STATUS_UNSUPPORTED`](Self::STATUS_UNSUPPORTED) by default
    /// (`ASYNC_WAIT_CTX_get_status`).
    pub fn status(&self) -> i32 {
        self.0.status.get()
    }

    /// The identity of the shared context: equal for all clones, stable while any clone lives.
    pub fn as_ptr(&self) -> *const c_void {
        Rc::as_ptr(&self.0).cast()
    }

    /// True when both handles refer to the same context.
    pub fn ptr_eq(&self, other: &WaitCtx) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// The context's [`Notifier`]: a `Send + Sync` handle that wakes the job from any thread. Async-aware
    /// code inside a job asks for it, hands it to whatever completes the work (an engine's thread, a
    /// client), and pauses; a driver then waits for the notification as well as for the job's fds.
    ///
    /// Asking marks the context as [awaiting a notification](Self::awaits_notification) for the
    /// current round, so that a pause without fds means "wait for `notify`" rather than "resume on
    /// the next turn". All handles of one context share one notification mark.
    pub fn notifier(&self) -> Notifier {
        self.0.awaits_notification.set(true);
        Notifier(self.notify_state().clone())
    }

    /// Whether a [`notifier`](Self::notifier) was handed out since the current round began. Rounds end
    /// when a paused job using the context is resumed, so a driver asks this after each pause.
    pub fn awaits_notification(&self) -> bool {
        self.0.awaits_notification.get()
    }

    /// Driver side: register who [`Notifier::notify`] wakes. Register before looking at
    /// [`take_notification`](Self::take_notification): a notification that came earlier is then seen
    /// there, and one that comes later wakes `waker`. Registering a waker that
    /// [`will_wake`](Waker::will_wake) the same task again keeps the old one and allocates nothing.
    pub fn set_waker(&self, waker: &Waker) {
        self.notify_state().set_waker(waker);
    }

    /// Driver side: forget the registered waker, so that late notifications wake nobody.
    pub fn clear_waker(&self) {
        if let Some(state) = self.0.notify.get() {
            state.clear_waker();
        }
    }

    /// Driver side: whether the context was notified since this was last asked, clearing the mark.
    pub fn take_notification(&self) -> bool {
        self.0.notify.get().is_some_and(|state| state.take())
    }

    /// Driver side: make a context that has served one job ready for the next, instead of dropping
    /// it and allocating a new one. Only a context nobody else can see qualifies: no other handle
    /// (the job ended and the application kept none), no notifier handle outside (a late `notify`
    /// from an engine must not wake the next job), no fd entry and no callback (dropping those runs
    /// their cleanups and destructors; an entry already cleared and holding no cleanup is only
    /// bookkeeping and goes). Returns false, changing nothing, otherwise.
    pub(crate) fn recycle(&self) -> bool {
        let shared = &*self.0;
        if Rc::strong_count(&self.0) != 1
            || shared.callback.borrow().is_some()
            || shared
                .fds
                .borrow()
                .iter()
                .any(|e| !e.deleted || e.cleanup.is_some())
            || shared
                .notify
                .get()
                .is_some_and(|state| Arc::strong_count(state) != 1)
        {
            return false;
        }
        if let Some(state) = shared.notify.get() {
            state.take();
            state.clear_waker();
        }
        // Cleared entries without a cleanup: dropping them runs no user code.
        shared.fds.borrow_mut().clear();
        shared.num_added.set(0);
        shared.num_deleted.set(0);
        shared.status.set(Self::STATUS_UNSUPPORTED);
        shared.awaits_notification.set(false);
        true
    }

    fn notify_state(&self) -> &Arc<NotifyState> {
        self.0.notify.get_or_init(NotifyState::new)
    }

    /// End the current round's wait for a notification: called by whoever resumes a paused job
    /// using this context, just before the switch. Returns whether the round changed fds, whose
    /// reset ([`reset_fd_changes`](Self::reset_fd_changes)) must then run on the job's own side,
    /// because it may drop entries and so run user code.
    #[inline]
    pub(crate) fn begin_round(&self) -> bool {
        self.0.awaits_notification.set(false);
        // A round without fd changes has nothing more to reset: the counters count exactly the
        // entries added this round and the entries marked deleted.
        self.changed_counts() != (0, 0)
    }

    /// The rest of a round's end when [`begin_round`](Self::begin_round) found fd changes: run by
    /// the resumed job, before its `pause` returns.
    #[inline(never)]
    pub(crate) fn reset_fd_changes(&self) {
        let mut doomed = 0;
        {
            let mut fds = self.0.fds.borrow_mut();
            self.0.num_added.set(0);
            self.0.num_deleted.set(0);
            for e in fds.iter_mut() {
                e.added_this_round = false;
                if e.deleted {
                    e.doomed = true;
                    doomed += 1;
                }
            }
        }
        // Entries cleared in an earlier round are freed without their cleanup, as in OpenSSL; outside
        // the borrow, because their destructors are user code, and one at a time, so that a driver
        // that resumes jobs allocates nothing here. Every one is dropped even if a destructor
        // panics; the first panic propagates.
        let mut first = None;
        for _ in 0..doomed {
            let entry = {
                let mut fds = self.0.fds.borrow_mut();
                let Some(index) = fds.iter().position(|e| e.doomed) else {
                    break;
                };
                fds.remove(index)
            };
            contain(&mut first, move || drop(entry));
        }
        rethrow(first);
    }

    fn live_newest_first(&self, keep: impl Fn(&WaitFd) -> bool) -> Vec<AsyncFd> {
        let fds = self.0.fds.borrow();
        fds.iter()
            .rev()
            .filter(|e| !e.deleted && keep(e))
            .map(|e| e.fd)
            .collect()
    }

    fn added_newest_first(&self) -> Vec<AsyncFd> {
        self.live_newest_first(|e| e.added_this_round)
    }

    fn deleted_newest_first(&self) -> Vec<AsyncFd> {
        let fds = self.0.fds.borrow();
        fds.iter()
            .rev()
            .filter(|e| is_deleted(e))
            .map(|e| e.fd)
            .collect()
    }
}

/// An entry the current round added: live and new.
fn is_added(e: &WaitFd) -> bool {
    !e.deleted && e.added_this_round
}

/// An entry the current round deleted (one added and cleared in the round is simply gone, and one
/// deleted in an ended round is on its way out).
fn is_deleted(e: &WaitFd) -> bool {
    e.deleted && !e.added_this_round && !e.doomed
}

/// Runs user code (a cleanup, or the destructor of a cleanup or callback) so that a panic in it does
/// not stop the work that follows: the first panic is kept in `first`, later ones are dropped.
fn contain(first: &mut Option<Box<dyn Any + Send>>, user_code: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(user_code)) {
        match first {
            None => *first = Some(payload),
            // Even the payload's own destructor is user code.
            Some(_) => drop(panic::catch_unwind(AssertUnwindSafe(move || drop(payload)))),
        }
    }
}

/// Hands the first panic caught by [`contain`] on to the caller, unless the thread is already
/// unwinding: a second panic escaping a destructor then would abort the process, so the panic (whose
/// message the panic hook has already printed) is dropped instead.
fn rethrow(first: Option<Box<dyn Any + Send>>) {
    if let Some(payload) = first {
        if std::thread::panicking() {
            drop(panic::catch_unwind(AssertUnwindSafe(move || drop(payload))));
        } else {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let fds = std::mem::take(self.fds.get_mut());
        let callback = self.callback.get_mut().take();
        let mut first = None;
        for entry in fds.into_iter().rev() {
            let WaitFd {
                key,
                fd,
                custom_data,
                cleanup,
                deleted,
                ..
            } = entry;
            let Some(cleanup) = cleanup else {
                continue;
            };
            contain(&mut first, move || {
                if deleted {
                    drop(cleanup);
                } else {
                    cleanup(key, fd, custom_data);
                }
            });
        }
        contain(&mut first, move || drop(callback));
        rethrow(first);
    }
}

//! A wake-up that crosses threads: how an engine's own thread (an accelerator's polling thread, a
//! signing client) tells whoever drives a paused job that the job can go on.
//!
//! OpenSSL's answer is the wait context's callback, called "in the context of a polling mechanism
//! or an interrupt". In Rust a [`WaitCallback`](crate::WaitCallback) is tied to the job's thread, so
//! the cross-thread path is a [`Notifier`]: a `Send + Sync` handle whose [`notify`](Notifier::notify)
//! sets a flag and wakes the [`Waker`] the driver registered. The flag is what makes the order of
//! events irrelevant: a notification that arrives before the job has paused, or before the driver
//! has registered its waker, is seen by the driver as soon as it looks.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

/// What a context's notifier handles share.
pub(crate) struct NotifyState {
    notified: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl NotifyState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(NotifyState {
            notified: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
    }

    /// Register who to wake; a waker that would wake the same task is kept as it is, so a driver that
    /// registers on every pause allocates nothing.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Forget the registered waker (its driver let go of the job).
    pub(crate) fn clear_waker(&self) {
        let old = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropped outside the lock: a waker's destructor is foreign code.
        drop(old);
    }

    /// Clear the flag and say whether it was set.
    pub(crate) fn take(&self) -> bool {
        // A plain load first: the common "not notified" answer then writes nothing to a line that
        // another thread may be notifying through.
        self.notified.load(Ordering::Acquire) && self.notified.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn is_set(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }
}

/// A handle that wakes a paused job from any thread (see [`WaitCtx::notifier`](crate::WaitCtx::notifier)
/// and [`current_notifier`](crate::current_notifier)).
///
/// [`notify`](Self::notify) marks the job's wait context as notified and wakes the [`Waker`] its
/// driver registered, if any. The mark stays until the driver takes it, so nothing is lost when the
/// notification comes first: before the job has paused, or before a waker is registered. Several
/// notifications before the driver looks count as one. A notifier may outlive its job; notifying it
/// then does nothing harmful (the mark is never taken, the waker is dropped with the last handle).
#[derive(Clone)]
pub struct Notifier(pub(crate) Arc<NotifyState>);

impl Notifier {
    /// Mark the job as ready to go on and wake its driver. Callable from any thread, at any time, as
    /// often as wanted; the waker is woken once per mark (a second `notify` before the driver took
    /// the first wakes nobody).
    pub fn notify(&self) {
        if self.0.notified.swap(true, Ordering::AcqRel) {
            return;
        }
        // Woken outside the lock: `wake` is foreign code and may take its own locks or notify again.
        let waker = self
            .0
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether a notification is waiting to be taken by the job's driver.
    pub fn is_notified(&self) -> bool {
        self.0.is_set()
    }

    /// True when both handles belong to the same wait context.
    pub fn ptr_eq(&self, other: &Notifier) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("notified", &self.is_notified())
            .finish_non_exhaustive()
    }
}

//! A wake-up that crosses threads: how an engine's own thread (an accelerator's polling thread, a
//! signing client) tells whoever drives a paused job that the job can go on.
//!
//! OpenSSL's answer is the wait context's callback, called "in the context of a polling mechanism
//! or an interrupt". In Rust a [`WaitCallback`](crate::WaitCallback) is tied to the job's thread, so
//! the cross-thread path is a [`Notifier`]: a `Send + Sync` handle whose [`notify`](Notifier::notify)
//! sets a flag and wakes the [`Waker`] the driver registered. The flag is what makes the order of
//! events irrelevant: a notification that arrives before the job has paused, or before the driver
//! has registered its waker, is seen by the driver as soon as it looks.

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::Waker;

/// What a context's notifier handles share.
pub(crate) struct NotifyState {
    notified: AtomicBool,
    waker: WakerSlot,
}

impl NotifyState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(NotifyState {
            notified: AtomicBool::new(false),
            waker: WakerSlot::new(),
        })
    }

    /// Register who to wake; a waker that would wake the same task is kept as it is, so a driver that
    /// registers on every pause allocates nothing.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let old = self.waker.set(waker);
        // Dropped outside the slot: a waker's destructor is foreign code.
        drop(old);
    }

    /// Forget the registered waker (its driver let go of the job).
    pub(crate) fn clear_waker(&self) {
        drop(self.waker.clear());
    }

    /// Clear the flag and say whether it was set.
    pub(crate) fn take(&self) -> bool {
        // A plain load first: the common "not notified" answer then writes nothing to a line that
        // another thread may be notifying through.
        self.notified.load(Ordering::SeqCst) && self.notified.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_set(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    fn notify(&self) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        // Woken outside the slot: `wake` is foreign code and may take its own locks or notify again.
        if let Some(waker) = self.waker.clone_for_wake() {
            waker.wake();
        }
    }
}

/// The registered waker, guarded by a state of our own rather than a `std::sync::Mutex`: the
/// driver's thread registers and clears, any thread clones it to wake it. Atomics only, so that
/// ThreadSanitizer sees the synchronisation even with an uninstrumented std (ci/step-11).
///
/// States: `IDLE` (nobody inside) and `BUSY` (one thread reads or writes `waker`). The driver side
/// (`set`, `clear`) waits its turn: it only ever waits for a notifier's clone of the waker. A
/// notifier never waits; finding the slot `BUSY`, it wakes nobody, and the mark it set is still seen
/// (SeqCst on the mark and on the state orders: its swap of the mark, its failed attempt, the
/// holder's release of the slot):
/// - the driver holds it, registering: a driver looks at the mark after registering (the contract
///   of [`WaitCtx::set_waker`](crate::WaitCtx::set_waker)), so that look sees the mark;
/// - the driver holds it, clearing: there is nobody to wake;
/// - another notifier holds it: the mark was taken since that notifier set it (or this one's swap
///   would have found it set), and that notifier's wake is still to come, after its release; it
///   makes the driver register and look again, and the look sees the mark.
pub(crate) struct WakerSlot {
    state: AtomicU8,
    waker: UnsafeCell<Option<Waker>>,
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;

// SAFETY: `waker` is only touched by the one thread that moved `state` from IDLE to BUSY, until it
// stores IDLE again (acquire on entry, release on exit); `Waker` is `Send + Sync`.
unsafe impl Sync for WakerSlot {}

impl WakerSlot {
    pub(crate) fn new() -> Self {
        WakerSlot {
            state: AtomicU8::new(IDLE),
            waker: UnsafeCell::new(None),
        }
    }

    fn try_enter(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Driver side: wait until the slot is ours (a notifier is cloning the waker).
    fn enter(&self) {
        let mut spins = 0u32;
        while !self.try_enter() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    fn leave(&self) {
        self.state.store(IDLE, Ordering::SeqCst);
    }

    /// Register `waker` unless the one there will wake the same task; returns the waker replaced.
    pub(crate) fn set(&self, waker: &Waker) -> Option<Waker> {
        self.enter();
        let _leave = Leave(self);
        // SAFETY: the slot is BUSY and ours (see `enter`): no other thread touches `waker` until
        // `_leave` stores IDLE, also if `waker.clone()` (foreign code) panics.
        let slot = unsafe { &mut *self.waker.get() };
        match slot.as_ref() {
            Some(current) if current.will_wake(waker) => None,
            _ => slot.replace(waker.clone()),
        }
    }

    /// Remove the registered waker and return it.
    pub(crate) fn clear(&self) -> Option<Waker> {
        self.enter();
        let _leave = Leave(self);
        // SAFETY: the slot is BUSY and ours until `_leave` is dropped.
        unsafe { &mut *self.waker.get() }.take()
    }

    /// Notifier side: a clone of the registered waker, or None when there is none or the driver
    /// is registering or clearing right now (see the type's documentation).
    pub(crate) fn clone_for_wake(&self) -> Option<Waker> {
        if !self.try_enter() {
            return None;
        }
        let _leave = Leave(self);
        // SAFETY: the slot is BUSY and ours until `_leave` is dropped, which happens on unwind too;
        // the clone is foreign code, but a waker cloning itself cannot reach this slot (only
        // `Notifier::notify` and the driver do).
        unsafe { &*self.waker.get() }.clone()
    }
}

/// Frees a [`WakerSlot`] when dropped: on the way out of its user, and on unwind from a waker's
/// `clone` (foreign code), so that a panic there cannot leave the slot busy for ever (the driver's
/// next registration would spin without end).
struct Leave<'a>(&'a WakerSlot);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave();
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
        self.0.notify();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let c = Arc::new(Counting::default());
        (c.clone(), Waker::from(c))
    }

    fn state(slot: &WakerSlot) -> u8 {
        slot.state.load(Ordering::SeqCst)
    }

    /// A waker whose `clone` panics once `ARMED` is set (foreign code may panic anywhere).
    mod panicking_clone {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::{RawWaker, RawWakerVTable, Waker};

        pub(super) static ARMED: AtomicBool = AtomicBool::new(false);
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);

        fn clone(_: *const ()) -> RawWaker {
            if ARMED.load(Ordering::SeqCst) {
                panic!("waker clone panics");
            }
            RawWaker::new(std::ptr::null(), &VTABLE)
        }

        fn noop(_: *const ()) {}

        pub(super) fn waker() -> Waker {
            // SAFETY: the vtable's functions ignore the data pointer and uphold RawWaker's contract
            // (clone returns a waker of the same vtable; wake/drop do nothing).
            unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
        }
    }

    #[test]
    fn a_panicking_waker_clone_leaves_the_slot_usable() {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let slot = WakerSlot::new();
        let panicky = panicking_clone::waker();
        slot.set(&panicky);
        panicking_clone::ARMED.store(true, Ordering::SeqCst);
        // A notifier's clone panics: the panic reaches the notifier's caller...
        assert!(catch_unwind(AssertUnwindSafe(|| slot.clone_for_wake())).is_err());
        panicking_clone::ARMED.store(false, Ordering::SeqCst);
        // ...and the slot is free again (a stuck BUSY would make the next `set` spin for ever).
        assert_eq!(state(&slot), IDLE);
        // The same for the driver's registration of a waker whose clone panics.
        let (_c, other) = counting();
        slot.set(&other);
        panicking_clone::ARMED.store(true, Ordering::SeqCst);
        assert!(catch_unwind(AssertUnwindSafe(|| slot.set(&panicky))).is_err());
        panicking_clone::ARMED.store(false, Ordering::SeqCst);
        assert_eq!(state(&slot), IDLE);
        assert!(
            slot.clone_for_wake().unwrap().will_wake(&other),
            "the old waker stays"
        );
    }

    #[test]
    fn an_empty_slot_is_idle_and_has_nobody_to_wake() {
        let slot = WakerSlot::new();
        assert_eq!(state(&slot), IDLE);
        assert!(slot.clone_for_wake().is_none());
        assert!(slot.clear().is_none());
        assert_eq!(state(&slot), IDLE);
    }

    #[test]
    fn set_stores_and_returns_to_idle() {
        let slot = WakerSlot::new();
        let (c, w) = counting();
        assert!(slot.set(&w).is_none(), "nothing replaced");
        assert_eq!(state(&slot), IDLE);
        slot.clone_for_wake().expect("registered").wake();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(state(&slot), IDLE);
    }

    #[test]
    fn set_keeps_a_waker_for_the_same_task_and_replaces_another() {
        let slot = WakerSlot::new();
        let (a, wa) = counting();
        let (_b, wb) = counting();
        slot.set(&wa);
        assert!(slot.set(&wa.clone()).is_none(), "same task: kept");
        assert_eq!(Arc::strong_count(&a), 3, "a, wa and the slot's one clone");
        let old = slot.set(&wb).expect("another task: replaced");
        assert!(old.will_wake(&wa));
        assert!(slot.clone_for_wake().unwrap().will_wake(&wb));
        assert_eq!(state(&slot), IDLE);
    }

    #[test]
    fn clear_takes_the_waker_out() {
        let slot = WakerSlot::new();
        let (_a, wa) = counting();
        slot.set(&wa);
        assert!(slot.clear().expect("was there").will_wake(&wa));
        assert!(slot.clone_for_wake().is_none());
        assert_eq!(state(&slot), IDLE);
    }

    #[test]
    fn a_busy_slot_gives_a_notifier_nobody_and_stays_busy() {
        let slot = WakerSlot::new();
        let (_a, wa) = counting();
        slot.set(&wa);
        assert!(slot.try_enter());
        assert_eq!(state(&slot), BUSY);
        assert!(!slot.try_enter(), "one holder at a time");
        assert!(slot.clone_for_wake().is_none(), "a notifier does not wait");
        assert_eq!(state(&slot), BUSY, "and leaves the holder's state alone");
        slot.leave();
        assert!(slot.clone_for_wake().is_some());
    }

    #[test]
    fn the_driver_side_waits_for_a_busy_slot() {
        let slot = Arc::new(WakerSlot::new());
        assert!(slot.try_enter());
        let started = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (_a, wa) = counting();
        let t = {
            let (slot, started, done) = (slot.clone(), started.clone(), done.clone());
            std::thread::spawn(move || {
                started.store(true, Ordering::SeqCst);
                slot.set(&wa);
                done.store(true, Ordering::SeqCst);
            })
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        for _ in 0..100 {
            std::thread::yield_now();
        }
        assert!(
            !done.load(Ordering::SeqCst),
            "set went in while the slot was busy"
        );
        slot.leave();
        t.join().unwrap();
        assert!(
            slot.clone_for_wake().is_some(),
            "registered once the slot was free"
        );
        assert_eq!(state(&slot), IDLE);
    }

    /// Registering (a new waker every round) and looking on this thread, notifying from two others:
    /// whenever the look finds no mark, the notifications that follow wake the waker registered
    /// before the look, and leave the mark.
    #[test]
    fn concurrent_register_and_wake_lose_nothing() {
        const ROUNDS: usize = 2000;
        let state = NotifyState::new();
        let round = Arc::new(AtomicUsize::new(0));
        let done = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (state, round, done) = (state.clone(), round.clone(), done.clone());
                let notifier = Notifier(state);
                std::thread::spawn(move || {
                    for r in 1..=ROUNDS {
                        while round.load(Ordering::SeqCst) < r {
                            std::thread::yield_now();
                        }
                        notifier.notify();
                        done[t].store(r, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let mut looked_first = 0;
        for r in 1..=ROUNDS {
            let (c, w) = counting();
            state.set_waker(&w);
            round.store(r, Ordering::SeqCst);
            // Replace it once more while the notifications may be in flight, then look.
            let (c2, w2) = counting();
            state.set_waker(&w2);
            drop((w, w2));
            let seen = state.take();
            while done.iter().any(|d| d.load(Ordering::SeqCst) < r) {
                std::thread::yield_now();
            }
            let wakes = c.0.load(Ordering::SeqCst) + c2.0.load(Ordering::SeqCst);
            if !seen {
                looked_first += 1;
                assert!(wakes >= 1, "round {r}: nobody woken after an empty look");
                assert!(state.take(), "round {r}: the mark is there");
            }
            assert!(
                wakes <= 2,
                "round {r}: two notifications wake at most twice"
            );
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(state.waker.state.load(Ordering::SeqCst), IDLE);
        // Not a threshold on timing: reported so that a run where the look always came first is
        // visible, not asserted.
        println!("{looked_first} of {ROUNDS} looks came before the notifications");
    }
}

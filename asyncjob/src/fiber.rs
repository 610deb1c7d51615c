//! Fibers: a closure running on a stack of its own, switched to and from explicitly. The only module
//! that calls `asyncjob_sys`, apart from the one query of the backend that `stack` makes (whether
//! fibers run on stacks that asyncjob provides).
//!
//! This layer knows stacks, fibers and switching, nothing of jobs, pools or threads' job state: a
//! [`Fiber`] carries an opaque payload `D` for the layers above. Its safe vocabulary: create a fiber
//! with a stack, launch a closure on it, resume it, let it suspend itself, leak it.
//!
//! The switch protocol: the resumer (the thread's own context, or a running fiber when a suspended
//! one is dropped from inside it) lends the fiber two things for the duration of one switch: the
//! closure (on a launch, passed as the start's value to a run of `run_launched` for its type) and an
//! output slot where the closure's result goes when it returns. The fiber reports back with one of
//! two exit codes; the resumer reads the slot only after control has come back, while the fiber is
//! suspended, so the two never touch it at the same time. A launch begins a run of the fiber
//! (`asyncjob_fiber_start`), a returned closure ends it (`asyncjob_fiber_finish`); a resume enters a
//! suspended fiber with `asyncjob_fiber_switch_into` and a pause leaves it with
//! `asyncjob_fiber_switch_back`, the switch's variants that know their direction (they keep the
//! fiber's unwinding link without testing it).

use std::cell::Cell;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::thread;

use asyncjob_sys as sys;

use crate::stack::{self, Allocator, DEFAULT_STACK_SIZE, StackMemory};

/// Passed into a suspended fiber by its resumer.
const WAKE_RESUME: usize = 1;
const WAKE_CANCEL: usize = 2;
const WAKE_RESUME_WITH_WORK: usize = 3;
/// Passed back to the resumer by the fiber.
const EXIT_PAUSED: usize = 1;
const EXIT_FINISHED: usize = 2;

/// Smallest custom stack accepted, beyond the shim's reserve: anything smaller cannot even run the
/// launch frames.
const MIN_CUSTOM_STACK: usize = 16 * 1024;

/// Whether the platform can create and switch fibers (`ASYNC_is_capable`).
pub(crate) fn is_capable() -> bool {
    // SAFETY: a pure query with no preconditions.
    unsafe { sys::asyncjob_fiber_is_capable() != 0 }
}

/// The name of the compiled fiber backend.
pub(crate) fn backend_name() -> &'static str {
    // SAFETY: the shim returns a pointer to a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(sys::asyncjob_fiber_backend()) };
    name.to_str().unwrap_or("unknown")
}

/// A context that can resume a fiber: a thread's own, or a running fiber's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resumer(NonNull<sys::asyncjob_fiber>);

/// Prepare the calling thread to switch fibers, and return its own context. Idempotent.
pub(crate) fn prepare_thread() -> Option<Resumer> {
    // SAFETY: prepares the calling thread; idempotent, no other preconditions.
    let raw = unsafe { sys::asyncjob_thread_fiber() };
    NonNull::new(raw).map(Resumer)
}

/// Undo [`prepare_thread`] (Windows converts the thread back; POSIX frees the overflow reporter's
/// signal stack).
///
/// # Safety
///
/// Must run on the thread's own context (no fiber running on this thread), and no fiber that this
/// thread suspended may be resumed from the thread's context afterwards unless it is prepared again.
pub(crate) unsafe fn release_thread() {
    // SAFETY: guaranteed by the caller.
    unsafe { sys::asyncjob_thread_fiber_release() };
}

/// What a resumed fiber did.
pub(crate) enum Exit<R> {
    /// It suspended itself.
    Paused,
    /// Its closure returned, or panicked.
    Finished(thread::Result<R>),
}

/// How a suspended fiber was woken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wake {
    /// Continue: the resumer did everything that had to happen before the fiber's code goes on.
    Resume,
    /// Continue, after the work that the layer above left for the fiber's own side (work that may
    /// run user code, which must run on the fiber's stack).
    ResumeWithWork,
    /// Its owner gave it up: its code must unwind.
    Cancel,
}

enum Stack {
    Default(sys::asyncjob_stack),
    Custom(StackMemory),
    /// The operating system owns the stack (Windows Fibers).
    Os,
}

/// A fiber: its saved context, its stack, and a payload `D` for the layers above. Owned through a
/// [`FiberBox`], because the shim and the code running on the fiber keep its address.
pub(crate) struct Fiber<D> {
    raw: Cell<*mut sys::asyncjob_fiber>,
    stack: Stack,
    resumer: Cell<*mut sys::asyncjob_fiber>,
    output: Cell<*mut ()>,
    cancelling: Cell<bool>,
    /// Whether the thread was panicking when control last entered the fiber, so that `suspend` can
    /// tell a panic unwinding the fiber's own code from one unwinding the resumer.
    entered_panicking: Cell<bool>,
    /// The next leaked fiber, once this one is leaked (see `FiberBox::leak`).
    next_leaked: Cell<*const ()>,
    pub(crate) data: D,
}

/// The owner of a heap-allocated [`Fiber`], which may be moved around (into a job handle, a pool)
/// while code on the fiber's own stack holds `&Fiber` to the same memory.
///
/// A `Box<Fiber>` would assert unique access on every move (it is `noalias`), which the fiber's own
/// code contradicts; this pointer asserts nothing, and all access goes through shared references to
/// `Cell`s. The memory is freed only when the owner drops it, and never while the fiber runs.
pub(crate) struct FiberBox<D>(NonNull<Fiber<D>>);

impl<D> std::ops::Deref for FiberBox<D> {
    type Target = Fiber<D>;

    #[inline]
    fn deref(&self) -> &Fiber<D> {
        // SAFETY: the pointer came from `Box::into_raw` in `FiberBox::new` and stays valid until this
        // owner drops it; only shared references are ever made from it.
        unsafe { self.0.as_ref() }
    }
}

impl<D> FiberBox<D> {
    fn new(fiber: Fiber<D>) -> FiberBox<D> {
        FiberBox(NonNull::from(Box::leak(Box::new(fiber))))
    }

    /// Give up the fiber for ever: its memory and its stack stay allocated, so whatever lives on the
    /// stack stays valid for the life of the process. Leaked fibers are chained from a global list, so
    /// that leak checkers see them as still reachable, not lost.
    pub(crate) fn leak(self) {
        let fiber = self.0.as_ptr();
        std::mem::forget(self);
        let mut head = LEAKED.load(Ordering::Relaxed);
        loop {
            // SAFETY: the fiber is alive for ever now, and only this thread can reach it until the
            // exchange below publishes it; `next_leaked` is never read.
            unsafe { (*fiber).next_leaked.set(head) };
            let erased = fiber.cast::<()>();
            match LEAKED.compare_exchange_weak(head, erased, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        LEAKED_JOBS.fetch_add(1, Ordering::Relaxed);
    }
}

impl<D> Drop for FiberBox<D> {
    fn drop(&mut self) {
        // SAFETY: made by `Box::leak` in `new`, dropped once here. A fiber is dropped only while it
        // is not running (idle in a pool, or finished), so no reference to it is alive.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl<D> std::fmt::Debug for Fiber<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fiber")
            .field("raw", &self.raw.get())
            .finish_non_exhaustive()
    }
}

impl<D> Fiber<D> {
    /// A new fiber with a stack from the process's allocator, or `None` when no stack or fiber can be
    /// had.
    pub(crate) fn create(data: D) -> Option<FiberBox<D>> {
        let stack = allocate_stack()?;
        let fiber = FiberBox::new(Fiber {
            raw: Cell::new(ptr::null_mut()),
            stack,
            resumer: Cell::new(ptr::null_mut()),
            output: Cell::new(ptr::null_mut()),
            cancelling: Cell::new(false),
            entered_panicking: Cell::new(false),
            next_leaked: Cell::new(ptr::null_mut()),
            data,
        });
        fiber.make_context().then_some(fiber)
    }

    /// (Re)make the fiber's context on its stack, idle: the next launch begins a run on it.
    fn make_context(&self) -> bool {
        let (base, size) = match &self.stack {
            Stack::Default(s) => (s.base.cast::<u8>(), s.size),
            Stack::Custom(m) => align_custom(m),
            Stack::Os => (ptr::null_mut::<u8>(), DEFAULT_STACK_SIZE),
        };
        let arg = (self as *const Fiber<D>).cast_mut().cast::<c_void>();
        // SAFETY: the stack range was handed out for this fiber alone and outlives its context (the
        // stack is released only in `Drop`, after the context); `arg` is this boxed fiber, whose
        // address is stable and which outlives the context for the same reason.
        let raw =
            unsafe { sys::asyncjob_fiber_create(base.cast(), size, Some(entered_unstarted), arg) };
        self.raw.set(raw);
        self.output.set(ptr::null_mut());
        self.cancelling.set(false);
        !raw.is_null()
    }

    /// Throw away a suspended fiber's context and make a fresh one on the same stack, without running
    /// anything that lives on that stack.
    ///
    /// # Safety
    ///
    /// The fiber must be suspended, not running. Nothing on its stack may rely on being dropped
    /// before its memory is reused: no value pinned there, no destructor whose skipping breaks an
    /// invariant. Stacks holding only C frames and plain data qualify.
    pub(crate) unsafe fn reset_without_unwinding(&self) -> bool {
        let raw = self.raw.replace(ptr::null_mut());
        if !raw.is_null() {
            // SAFETY: the fiber is suspended, not running; the caller vouches that abandoning the
            // frames on its stack is sound.
            unsafe { sys::asyncjob_fiber_free(raw) };
        }
        self.make_context()
    }

    /// This fiber as the resumer of another one, while it runs.
    pub(crate) fn as_resumer(&self) -> Resumer {
        Resumer(NonNull::new(self.raw.get()).expect("a live fiber has a context"))
    }

    /// Run `f` on this idle fiber: move it onto the fiber's stack and run it until it suspends or
    /// returns.
    ///
    /// # Safety
    ///
    /// `from` must be the context running now, and this fiber idle (fresh, or its last closure
    /// returned): not running, not suspended.
    #[inline(always)]
    pub(crate) unsafe fn launch<F, R>(&self, from: Resumer, f: F) -> Exit<R>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        // The fiber moves the closure out (its first action on being launched); never dropped here.
        let closure = ManuallyDrop::new(f);
        self.cancelling.set(false);
        // The closure's address travels as the start's value, to the run of `run_launched` for its
        // type.
        // SAFETY: guaranteed by the caller; `closure` lives until the switch returns.
        unsafe {
            let value = ptr::from_ref(&closure) as usize;
            self.switch_in::<R>(from, value, Entry::Start(run_launched::<F, R, D>))
        }
    }

    /// Continue a suspended fiber until it suspends again or its closure returns. With
    /// `Wake::Cancel` its `suspend` reports the cancellation.
    ///
    /// # Safety
    ///
    /// `from` must be the context running now, this fiber suspended (in `suspend`), and `R` the
    /// result type of the closure it was launched with.
    #[inline(always)]
    pub(crate) unsafe fn resume<R: 'static>(&self, from: Resumer, wake: Wake) -> Exit<R> {
        let message = wake_value(wake);
        // SAFETY: guaranteed by the caller.
        unsafe { self.switch_in::<R>(from, message, Entry::Resume) }
    }

    /// # Safety
    ///
    /// As for `launch` (with `Entry::Start`) or `resume` (with `Entry::Resume`); `message` is the
    /// value the start's function expects for an idle fiber, a wake code for a suspended one.
    #[inline(always)]
    unsafe fn switch_in<R: 'static>(&self, from: Resumer, message: usize, entry: Entry) -> Exit<R> {
        let mut output: Option<thread::Result<R>> = None;
        // SAFETY: `from` is the context running now and this fiber is idle or suspended (guaranteed by
        // the caller). `output` stays alive and unused here until the switch returns.
        let exit = unsafe {
            let switch = self.resume_begin(from, &mut output, thread::panicking());
            let (from, to, message) =
                (switch.from.cast(), switch.to.cast(), message as *mut c_void);
            match entry {
                Entry::Start(run) => sys::asyncjob_fiber_start(from, to, message, Some(run)),
                Entry::Resume => sys::asyncjob_fiber_switch_into(from, to, message),
            }
        };
        // The output slot now points at a dead local; it is read only by a closure returning, which
        // happens only during a switch in, and every switch in sets it first.
        exit_of(output, exit)
    }

    /// The part of a launch or resume before its switch: lends the fiber the output slot and the
    /// resumer. A caller that makes the switch itself ([`switch_into`], with the value `wake_value`
    /// gives) then hands the slot and the switch's value to `exit_of`.
    ///
    /// # Safety
    ///
    /// As for `launch` or `resume`; `output` holds `None`, and it stays alive and untouched by the
    /// caller until the switch has come back. `panicking` is `thread::panicking()`, asked by the
    /// caller (before anything else, in a caller that wants no stack frame: the answer may take a
    /// call).
    #[inline(always)]
    pub(crate) unsafe fn resume_begin<R: 'static>(
        &self,
        from: Resumer,
        output: *mut Option<thread::Result<R>>,
        panicking: bool,
    ) -> RawSwitch {
        self.output.set(output.cast());
        self.resumer.set(from.0.as_ptr());
        self.entered_panicking.set(panicking);
        RawSwitch {
            from: from.0.as_ptr(),
            to: self.raw.get(),
        }
    }

    /// Prepares handing control back to the resumer until woken: the caller then makes the switch
    /// ([`switch_back`]) and hands its value to `suspend_end`. `Err` when there is no switch to
    /// make: `Err(None)` while the fiber's code unwinds from a panic it did not enter with (the
    /// thread's panic count is per thread, and a switch would carry it to the resumer),
    /// `Err(Some(Wake::Cancel))` when it was cancelled and must keep unwinding. `panicking` answers
    /// `thread::panicking()`; it is asked only when the answer matters, and a caller that already
    /// knows it passes it in a closure.
    ///
    /// # Safety
    ///
    /// Must be called on this fiber's own stack, while it runs.
    #[inline(always)]
    pub(crate) unsafe fn suspend_begin(
        &self,
        panicking: impl FnOnce() -> bool,
    ) -> Result<RawSwitch, Option<Wake>> {
        if panicking() && (self.cancelling.get() || !self.entered_panicking.get()) {
            return Err(None);
        }
        if self.cancelling.get() {
            // The code caught the cancellation unwind and tried to suspend again: keep unwinding.
            return Err(Some(Wake::Cancel));
        }
        Ok(RawSwitch {
            from: self.raw.get(),
            to: self.resumer.get(),
        })
    }

    /// How the switch made after `suspend_begin` came back (its value), recorded.
    #[inline(always)]
    pub(crate) fn suspend_end(&self, wake: *mut c_void) -> Wake {
        match wake as usize {
            WAKE_RESUME => Wake::Resume,
            WAKE_RESUME_WITH_WORK => Wake::ResumeWithWork,
            _ => {
                debug_assert_eq!(wake as usize, WAKE_CANCEL);
                self.cancelling.set(true);
                Wake::Cancel
            }
        }
    }

    /// Whether this fiber was woken with [`Wake::Cancel`].
    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancelling.get()
    }
}

impl<D> Drop for Fiber<D> {
    fn drop(&mut self) {
        let raw = self.raw.get();
        if !raw.is_null() {
            // SAFETY: a fiber is dropped only when it is not running (idle in a pool, or paused and
            // abandoned); its stack is still allocated here.
            unsafe { sys::asyncjob_fiber_free(raw) };
        }
        match &mut self.stack {
            Stack::Default(s) => {
                // SAFETY: made by asyncjob_stack_alloc and released once, after its fiber was freed.
                unsafe { sys::asyncjob_stack_free(s) }
            }
            Stack::Custom(memory) => {
                if let Allocator::Custom(custom) = stack::allocator() {
                    custom.release(*memory);
                }
            }
            Stack::Os => {}
        }
    }
}

/// The function of a fiber's run: `(the fiber, the start's value)`.
type RunFn = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// How a fiber left, from the output slot its switch in lent it and the switch's value. The slot
/// alone says: a closure that returned filled it, a fiber that paused did not (the exit code agrees;
/// it is checked in debug builds only).
#[inline(always)]
pub(crate) fn exit_of<R>(output: Option<thread::Result<R>>, exit: *mut c_void) -> Exit<R> {
    match output {
        Some(result) => {
            debug_assert_eq!(exit as usize, EXIT_FINISHED);
            Exit::Finished(result)
        }
        None => {
            debug_assert_eq!(exit as usize, EXIT_PAUSED);
            Exit::Paused
        }
    }
}

/// The two contexts of a switch that the caller makes itself: `from` runs now, `to` is resumed.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawSwitch {
    pub from: *mut sys::asyncjob_fiber,
    pub to: *mut sys::asyncjob_fiber,
}

/// The value that wakes a suspended fiber with `wake`, for a switch made elsewhere (after
/// `Job::resume_begin`).
#[inline(always)]
pub(crate) fn wake_value(wake: Wake) -> usize {
    match wake {
        Wake::Resume => WAKE_RESUME,
        Wake::ResumeWithWork => WAKE_RESUME_WITH_WORK,
        Wake::Cancel => WAKE_CANCEL,
    }
}

/// Makes `switch` into a fiber, waking it with `value` (the value `Job::resume_begin` returned
/// beside the switch), for a caller that makes the switch itself; returns the value the fiber comes
/// back with (never 0). Written as a call in tail position, it becomes a jump: the switch then
/// comes back straight to the caller's caller.
///
/// # Safety
///
/// As `Job::resume_begin` requires of the switch it returns.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn switch_into(switch: RawSwitch, value: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { sys::asyncjob_fiber_switch_into(switch.from, switch.to, value as *mut c_void) }
}

/// Makes `switch` out of the running fiber back to its resumer, for a caller of `pause_begin` that
/// makes the switch itself; returns the value the fiber is woken with (never 0). As
/// [`switch_into`], a call in tail position becomes a jump.
///
/// # Safety
///
/// As `pause_begin` requires of the switch it returns.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn switch_back(switch: RawSwitch) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { sys::asyncjob_fiber_switch_back(switch.from, switch.to, EXIT_PAUSED as *mut c_void) }
}

// The values that come back from a switch are never 0, so that a caller can tell "no switch made"
// apart by 0 (see `switch_into`).
const _: () = assert!(WAKE_RESUME != 0 && WAKE_CANCEL != 0 && WAKE_RESUME_WITH_WORK != 0);
const _: () = assert!(EXIT_PAUSED != 0 && EXIT_FINISHED != 0);

/// What the switch after `pause_begin` brings back when the pause has nothing left to do: the
/// resumer did the round's work (see `Wake::Resume`), so `pause_end` may be skipped.
#[doc(hidden)]
pub const RESUMED_DONE: usize = WAKE_RESUME;

/// How `switch_in` enters a fiber.
#[derive(Clone, Copy)]
enum Entry {
    /// An idle fiber: a new run of this function on its empty stack.
    Start(RunFn),
    /// A suspended fiber: it continues in `suspend`.
    Resume,
}

/// Every leaked fiber, chained through `next_leaked`.
static LEAKED: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
/// How many fibers this process has leaked.
static LEAKED_JOBS: AtomicUsize = AtomicUsize::new(0);

/// How many fibers the process has leaked.
pub(crate) fn leaked_fibers() -> usize {
    LEAKED_JOBS.load(Ordering::Relaxed)
}

fn allocate_stack() -> Option<Stack> {
    if !stack::uses_caller_stacks() {
        return Some(Stack::Os);
    }
    match stack::allocator() {
        Allocator::Default => {
            let mut out = sys::asyncjob_stack {
                base: ptr::null_mut(),
                size: 0,
                mapping: ptr::null_mut(),
                mapping_size: 0,
                guard: 0,
            };
            // SAFETY: `out` is a valid place for the shim to describe the new stack.
            let rc = unsafe { sys::asyncjob_stack_alloc(DEFAULT_STACK_SIZE, &mut out) };
            (rc == 0).then_some(Stack::Default(out))
        }
        Allocator::Custom(custom) => {
            let memory = custom.allocate()?;
            let (_, usable) = align_custom(&memory);
            if usable < MIN_CUSTOM_STACK {
                custom.release(memory);
                return None;
            }
            Some(Stack::Custom(memory))
        }
    }
}

/// The 16-byte aligned part of custom stack memory, as the shim requires.
fn align_custom(memory: &StackMemory) -> (*mut u8, usize) {
    let start = memory.base.as_ptr() as usize;
    let end = start.saturating_add(memory.size) & !15;
    let aligned = (start + 15) & !15;
    let size = end.saturating_sub(aligned);
    (memory.base.as_ptr().wrapping_add(aligned - start), size)
}

/// The entry function every fiber is created with. It never runs: a fiber is only ever entered by a
/// launch, which begins a run of its own function, or by a resume after that.
extern "C" fn entered_unstarted(_arg: *mut c_void, _first: *mut c_void) {
    crate::abort_with("a fiber was entered before it was launched");
}

/// Aborts the process when dropped during an unwind that is not a Rust panic: glibc's forced unwind
/// of `pthread_exit` or `pthread_cancel` called inside a job. That unwind cannot go on past the job's
/// stack to the thread's own frames, and catching it is fatal too (glibc aborts when its exception is
/// not rethrown), so the process stops here with a message saying why. Forgotten on every other path.
struct AbortOnForeignUnwind;

impl Drop for AbortOnForeignUnwind {
    fn drop(&mut self) {
        if !thread::panicking() {
            crate::abort_with(
                "pthread_exit or pthread_cancel (a forced unwind) inside a job: a thread cannot \
                 exit from a job's stack",
            );
        }
    }
}

/// A fiber's run for a launched closure of type `F`: moves the closure onto the fiber's stack, runs
/// it, puts its result in the output slot and ends the run.
///
/// # Safety
///
/// Called only by `asyncjob_fiber_start` from `Fiber::launch::<F, R>`: `arg` is the `Fiber<D>` given
/// to `asyncjob_fiber_create` (which outlives its raw fiber), and `closure` points to a live
/// `ManuallyDrop<F>` holding the closure, which this call moves out (its owner never touches it
/// again). The fiber's output slot points to a live `Option<thread::Result<R>>` whenever the closure
/// returns.
unsafe extern "C" fn run_launched<F: FnOnce() -> R, R, D>(arg: *mut c_void, closure: *mut c_void) {
    // SAFETY: guaranteed by the caller. The fiber's owner is a `FiberBox`, which asserts no
    // uniqueness, so this shared reference may coexist with the owner's moves and other references.
    let fiber = unsafe { &*arg.cast::<Fiber<D>>() };
    // SAFETY: guaranteed by the caller (`ManuallyDrop<F>` has the layout of `F`); the closure is
    // moved onto this stack before the first pause, so the resumer's copy may go away afterwards,
    // and its owner never drops it.
    let f = unsafe { closure.cast::<F>().read() };
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let foreign = AbortOnForeignUnwind;
        let r = f();
        std::mem::forget(foreign);
        r
    }));
    let output = fiber.output.get().cast::<Option<thread::Result<R>>>();
    // SAFETY: whoever resumed this fiber last (`launch`, or `resume::<R>` with the same `R`) set the
    // output slot and waits in `switch_in` until this fiber switches out. The slot holds the `None`
    // that `switch_in` put there, which has nothing to drop: it is overwritten.
    unsafe { output.write(Some(result)) };
    // SAFETY: this fiber is running, and its resumer waits in `switch_in` for this exit. Nothing on
    // this stack is used after the finish: the closure's frames have returned and this function's
    // locals are plain data. Where a stack cannot be restarted the finish returns when the fiber is
    // launched again, and this run then returns at once, as the shim requires.
    unsafe {
        sys::asyncjob_fiber_finish(
            fiber.raw.get(),
            fiber.resumer.get(),
            EXIT_FINISHED as *mut c_void,
        )
    };
}

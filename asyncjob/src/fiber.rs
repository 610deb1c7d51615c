//! The only module that touches `asyncjob_sys`, and the only one with `unsafe` code.
//!
//! It turns the raw shim into a small safe vocabulary for `job.rs`: create a fiber with a stack,
//! launch a closure on it, resume it, let it suspend itself, and know which fiber is running.
//!
//! The switch protocol: the resumer (the thread's own context, or a running job when a paused job is
//! dropped from inside another job) lends the fiber two things for the duration of one switch: a
//! launcher (on the first run of a job, passed as the switch's value) and an output slot where the
//! job writes its result when it finishes. The fiber reports back with one of two exit codes; the resumer reads the slot only after
//! control has come back, while the fiber is suspended, so the two never touch it at the same time.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::thread;

use asyncjob_sys as sys;

use crate::error::Error;
use crate::job::JobData;
use crate::pool::Pool;
use crate::stack::{self, Allocator, DEFAULT_STACK_SIZE, StackMemory};

/// Passed into a suspended fiber by its resumer.
const WAKE_RESUME: usize = 1;
const WAKE_CANCEL: usize = 2;
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

/// Whether fibers run on stacks that asyncjob provides (false with Windows Fibers).
pub(crate) fn uses_caller_stacks() -> bool {
    // SAFETY: a pure query with no preconditions.
    unsafe { sys::asyncjob_fiber_uses_caller_stack() != 0 }
}

/// The name of the compiled fiber backend.
pub(crate) fn backend_name() -> &'static str {
    // SAFETY: the shim returns a pointer to a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(sys::asyncjob_fiber_backend()) };
    name.to_str().unwrap_or("unknown")
}

/// A context that can resume a job: the thread's own or a running job's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resumer(NonNull<sys::asyncjob_fiber>);

/// The per-thread state every job operation touches, kept in one thread-local with a constant
/// initialiser and no destructor: each operation reaches it once (inside a shared library every
/// thread-local lookup is a call), and it stays reachable through the whole of thread teardown.
pub(crate) struct ThreadState {
    /// The fiber running on this thread, or null on the thread's own context.
    running: Cell<*const Fiber>,
    /// The thread's own context once prepared.
    thread_fiber: Cell<Option<Resumer>>,
    /// `ASYNC_block_pause` depth: per thread, not per job, as in OpenSSL.
    pause_blocked: Cell<u32>,
    /// Jobs handed out paused and not yet finished or dropped.
    outstanding: Cell<usize>,
    /// The thread's job pool. `ManuallyDrop` keeps the thread-local free of a destructor; the pool is
    /// dropped at thread exit by `ThreadExit` instead.
    pool: ManuallyDrop<RefCell<Option<Pool>>>,
    /// Set once the thread is known to be exiting: `ThreadExit` has run, or a paused job was dropped
    /// from inside the thread's thread-local destructors. From then on no job runs again on this
    /// thread (a paused job may borrow a thread-local that is already destroyed), the thread is never
    /// prepared again and no new pool is made (it would never be freed).
    exiting: Cell<bool>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            running: Cell::new(ptr::null()),
            thread_fiber: Cell::new(None),
            pause_blocked: Cell::new(0),
            outstanding: Cell::new(0),
            pool: ManuallyDrop::new(RefCell::new(None)),
            exiting: Cell::new(false),
        }
    };
    /// Marks the thread as exiting and frees its pool; registered when the first pool is made.
    static THREAD_EXIT: ThreadExit = const { ThreadExit };
}

struct ThreadExit;

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let pool = THREAD.with(|t| {
            t.exiting.set(true);
            t.pool.borrow_mut().take()
        });
        drop(pool);
        release_thread_context();
    }
}

/// The calling thread's job state.
#[inline]
pub(crate) fn thread() -> &'static ThreadState {
    let state: *const ThreadState = THREAD.with(|t| t as *const ThreadState);
    // SAFETY: THREAD has a constant initialiser and no destructor, so its storage is valid for the
    // whole life of the thread. The reference cannot outlive the thread: `ThreadState` is not `Sync`
    // (it is all `Cell`s), so `&ThreadState` is not `Send` and can reach no other thread, and nothing
    // of this thread runs after it has exited.
    unsafe { &*state }
}

impl ThreadState {
    /// The thread's own context, to start or resume a job from. Jobs are not started or resumed
    /// from inside a job ([`Error::Nested`]).
    #[inline]
    pub(crate) fn resumer(&self) -> Result<Resumer, Error> {
        if !self.running.get().is_null() {
            return Err(Error::Nested);
        }
        match self.thread_fiber.get() {
            Some(ctx) => Ok(ctx),
            None => self.prepare().ok_or(Error::ThreadSetup),
        }
    }

    #[cold]
    fn prepare(&self) -> Option<Resumer> {
        if self.exiting.get() {
            // The thread's fiber context was released for good; preparing it again would leak it.
            return None;
        }
        // SAFETY: prepares the calling thread; idempotent, no other preconditions.
        let raw = unsafe { sys::asyncjob_thread_fiber() };
        let ctx = Resumer(NonNull::new(raw)?);
        self.thread_fiber.set(Some(ctx));
        Some(ctx)
    }

    /// The context that is running now (the thread's own, or a job's), as a resumer for another
    /// fiber.
    pub(crate) fn running_context(&self) -> Option<Resumer> {
        let running = self.running.get();
        if running.is_null() {
            return self.thread_fiber.get().or_else(|| self.prepare());
        }
        // SAFETY: `running` is set only while that fiber runs, and a running fiber cannot be freed:
        // its owner (a `Job` consumed by `resume`, or the pool) is out of reach of the fiber's code.
        Some(unsafe { (*running).resumer_handle() })
    }

    /// Run `f` with the running job's fiber, if any.
    #[inline]
    pub(crate) fn with_running<T>(&self, f: impl FnOnce(Option<&Fiber>) -> T) -> T {
        let running = self.running.get();
        if running.is_null() {
            return f(None);
        }
        // SAFETY: see `running_context`: the running fiber outlives any call made on its own stack.
        f(Some(unsafe { &*running }))
    }

    /// Whether a job is running on this thread.
    #[inline]
    pub(crate) fn in_job(&self) -> bool {
        !self.running.get().is_null()
    }

    /// The thread's pause-block depth.
    #[inline]
    pub(crate) fn pause_blocked(&self) -> u32 {
        self.pause_blocked.get()
    }

    /// Change the pause-block depth if a job is running (block and unblock are ignored outside).
    #[inline]
    pub(crate) fn adjust_pause_block(&self, block: bool) {
        if self.in_job() {
            let depth = self.pause_blocked.get();
            self.pause_blocked.set(if block {
                depth.saturating_add(1)
            } else {
                depth.saturating_sub(1)
            });
        }
    }

    pub(crate) fn reset_pause_block(&self) {
        self.pause_blocked.set(0);
    }

    /// Count jobs handed out paused: +1 when one pauses, -1 when it is resumed or dropped.
    #[inline]
    pub(crate) fn count_outstanding(&self, delta: isize) {
        self.outstanding
            .set(self.outstanding.get().wrapping_add_signed(delta));
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    /// The thread's pool slot.
    #[inline]
    pub(crate) fn pool(&self) -> &RefCell<Option<Pool>> {
        &self.pool
    }

    /// Whether a pool may still be made on this thread, registering its release at thread exit.
    pub(crate) fn may_make_pool(&self) -> bool {
        if self.exiting.get() {
            return false;
        }
        THREAD_EXIT.try_with(|_| ()).is_ok()
    }

    /// Whether the thread is exiting, so that a paused job must never run again. Checked before a
    /// dropped job is unwound: besides asyncjob's own exit marker, this looks for the thread's
    /// thread-local destructors on the call stack, because thread-locals registered after asyncjob's
    /// state are destroyed before that marker is set, and the job may borrow one of them.
    #[cold]
    pub(crate) fn exiting_for_drop(&self) -> bool {
        if !self.exiting.get() && crate::teardown::in_thread_local_destructors() {
            self.exiting.set(true);
        }
        self.exiting.get()
    }
}

/// Undo the thread preparation (Windows converts the thread back). Called when the thread's job state
/// is torn down, on the thread's own context.
pub(crate) fn release_thread_context() {
    let prepared = THREAD.with(|t| t.running.get().is_null() && t.thread_fiber.take().is_some());
    if prepared {
        // SAFETY: we run on the thread's own context (no fiber is running), as the shim requires.
        unsafe { sys::asyncjob_thread_fiber_release() };
    }
}

/// What a resumed fiber did.
pub(crate) enum Exit<R> {
    /// It suspended itself (the job paused).
    Paused,
    /// Its job returned, or panicked.
    Finished(thread::Result<R>),
}

/// How a suspended fiber was woken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wake {
    Resume,
    /// Its job handle was dropped: the job must unwind.
    Cancel,
}

enum Stack {
    Default(sys::asyncjob_stack),
    Custom(StackMemory),
    /// The operating system owns the stack (Windows Fibers).
    Os,
}

/// Type-erased first run of a job: the closure lives on the resumer's stack until the fiber moves it
/// onto its own.
#[derive(Clone, Copy)]
struct Launch {
    closure: *mut (),
    run: unsafe fn(*mut (), &Fiber),
}

/// One job's fiber: its saved context, its stack and the job data. Owned through a [`FiberBox`],
/// because the shim and the code running on the fiber keep its address.
pub(crate) struct Fiber {
    raw: Cell<*mut sys::asyncjob_fiber>,
    stack: Stack,
    resumer: Cell<*mut sys::asyncjob_fiber>,
    output: Cell<*mut ()>,
    cancelling: Cell<bool>,
    /// Whether the thread was panicking when control last entered the fiber, so that `pause` can
    /// tell a panic unwinding the job itself from one unwinding the resumer.
    entered_panicking: Cell<bool>,
    /// The next leaked fiber, once this one is leaked (see `FiberBox::leak`).
    next_leaked: Cell<*mut Fiber>,
    pub(crate) data: JobData,
}

/// The owner of a heap-allocated [`Fiber`], which may be moved around (into a `Job`, the pool)
/// while code on the fiber's own stack holds `&Fiber` to the same memory.
///
/// A `Box<Fiber>` would assert unique access on every move (it is `noalias`), which the fiber's own
/// code contradicts; this pointer asserts nothing, and all access goes through shared references to
/// `Cell`s. The memory is freed only when the owner drops it, and never while the fiber runs.
pub(crate) struct FiberBox(NonNull<Fiber>);

impl std::ops::Deref for FiberBox {
    type Target = Fiber;

    #[inline]
    fn deref(&self) -> &Fiber {
        // SAFETY: the pointer came from `Box::into_raw` in `FiberBox::new` and stays valid until this
        // owner drops it; only shared references are ever made from it.
        unsafe { self.0.as_ref() }
    }
}

impl FiberBox {
    fn new(fiber: Fiber) -> FiberBox {
        FiberBox(NonNull::from(Box::leak(Box::new(fiber))))
    }

    /// Give up the fiber for ever: its memory and its stack stay allocated, so whatever lives on the
    /// stack stays valid for the life of the process. Leaked fibers are chained from a global list, so
    /// that leak checkers see them as still reachable, not lost.
    fn leak(self) {
        let fiber = self.0.as_ptr();
        std::mem::forget(self);
        let mut head = LEAKED.load(Ordering::Relaxed);
        loop {
            // SAFETY: the fiber is alive for ever now, and only this thread can reach it until the
            // exchange below publishes it; `next_leaked` is never read.
            unsafe { (*fiber).next_leaked.set(head) };
            match LEAKED.compare_exchange_weak(head, fiber, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        LEAKED_JOBS.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for FiberBox {
    fn drop(&mut self) {
        // SAFETY: made by `Box::leak` in `new`, dropped once here. A fiber is dropped only while it
        // is not running (idle in a pool, or finished), so no reference to it is alive.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl std::fmt::Debug for Fiber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fiber")
            .field("raw", &self.raw.get())
            .finish_non_exhaustive()
    }
}

impl Fiber {
    /// A new fiber with a stack from the process's allocator, or `None` when no stack or fiber can be
    /// had.
    pub(crate) fn create(data: JobData) -> Option<FiberBox> {
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

    /// (Re)make the fiber's context so that the next switch into it enters `fiber_root` afresh.
    fn make_context(&self) -> bool {
        let (base, size) = match &self.stack {
            Stack::Default(s) => (s.base.cast::<u8>(), s.size),
            Stack::Custom(m) => align_custom(m),
            Stack::Os => (ptr::null_mut::<u8>(), DEFAULT_STACK_SIZE),
        };
        let arg = (self as *const Fiber).cast_mut().cast::<c_void>();
        // SAFETY: the stack range was handed out for this fiber alone and outlives its context (the
        // stack is released only in `Drop`, after the context); `arg` is this boxed fiber, whose
        // address is stable and which outlives the context for the same reason.
        let raw = unsafe { sys::asyncjob_fiber_create(base.cast(), size, Some(fiber_root), arg) };
        self.raw.set(raw);
        self.output.set(ptr::null_mut());
        self.cancelling.set(false);
        !raw.is_null()
    }

    /// Throw away a suspended job's context and make a fresh one on the same stack, without running
    /// anything that lives on that stack.
    ///
    /// # Safety
    ///
    /// Nothing on the job's stack may rely on being dropped before its memory is reused: no value
    /// pinned there, no destructor whose skipping breaks an invariant. Stacks holding only C frames
    /// and plain data qualify.
    unsafe fn reset_without_unwinding(&self) -> bool {
        let raw = self.raw.replace(ptr::null_mut());
        if !raw.is_null() {
            // SAFETY: the fiber is suspended, not running; the caller vouches that abandoning the
            // frames on its stack is sound.
            unsafe { sys::asyncjob_fiber_free(raw) };
        }
        self.make_context()
    }

    fn resumer_handle(&self) -> Resumer {
        Resumer(NonNull::new(self.raw.get()).expect("a live fiber has a context"))
    }

    /// First run of a job on this fiber: move `f` onto the fiber's stack and run it until it pauses or
    /// finishes.
    pub(crate) fn launch<F, R>(&self, t: &ThreadState, from: Resumer, f: F) -> Exit<R>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        let mut closure = Some(f);
        let launch = Launch {
            closure: (&mut closure as *mut Option<F>).cast(),
            run: run_job::<F, R>,
        };
        self.cancelling.set(false);
        // The launcher travels as the switch's value: `fiber_root` receives it as its first value
        // or as the return of the switch that ended the fiber's previous job.
        let exit = self.switch_in::<R>(t, from, &launch as *const Launch as usize);
        debug_assert!(closure.is_none(), "the fiber took the closure");
        exit
    }

    /// Continue a paused job until it pauses again or finishes. With `Wake::Cancel` the job's
    /// `pause()` unwinds instead of returning.
    #[inline]
    pub(crate) fn resume<R: 'static>(&self, t: &ThreadState, from: Resumer, wake: Wake) -> Exit<R> {
        let message = match wake {
            Wake::Resume => WAKE_RESUME,
            Wake::Cancel => WAKE_CANCEL,
        };
        self.switch_in::<R>(t, from, message)
    }

    #[inline]
    fn switch_in<R: 'static>(&self, t: &ThreadState, from: Resumer, message: usize) -> Exit<R> {
        let mut output: Option<thread::Result<R>> = None;
        self.output
            .set((&mut output as *mut Option<thread::Result<R>>).cast());
        self.resumer.set(from.0.as_ptr());
        self.entered_panicking.set(thread::panicking());
        let previous = t.running.replace(self as *const Fiber);
        // SAFETY: `from` is the context running now (the caller passes `running_context()`), and this
        // fiber is suspended or fresh: it is owned by the caller and not running anywhere. `output`
        // stays alive and unused here until the switch returns.
        let exit = unsafe {
            sys::asyncjob_fiber_switch(from.0.as_ptr(), self.raw.get(), message as *mut c_void)
        };
        t.running.set(previous);
        self.output.set(ptr::null_mut());
        match exit as usize {
            EXIT_PAUSED => Exit::Paused,
            EXIT_FINISHED => Exit::Finished(output.expect("a finished job left its result")),
            other => unreachable!("fiber exit code {other}"),
        }
    }

    /// Called on this fiber's own stack: hand control back to the resumer until woken. Returns
    /// `None` without switching while the job itself unwinds (from a panic or its cancellation): the
    /// thread's panic count is per thread, and a switch would carry it to the resumer.
    #[inline]
    pub(crate) fn suspend(&self) -> Option<Wake> {
        if thread::panicking() && (self.cancelling.get() || !self.entered_panicking.get()) {
            return None;
        }
        if self.cancelling.get() {
            // The job caught the cancellation unwind and tried to pause again: keep unwinding.
            return Some(Wake::Cancel);
        }
        // SAFETY: this fiber is the one running (its own code calls this), and the resumer is
        // suspended inside `switch_in`, waiting for exactly this switch.
        let wake = unsafe {
            sys::asyncjob_fiber_switch(
                self.raw.get(),
                self.resumer.get(),
                EXIT_PAUSED as *mut c_void,
            )
        } as usize;
        if wake == WAKE_CANCEL {
            self.cancelling.set(true);
            Some(Wake::Cancel)
        } else {
            Some(Wake::Resume)
        }
    }

    /// Whether this fiber is unwinding because its handle was dropped.
    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancelling.get()
    }
}

impl Drop for Fiber {
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

/// Give up a paused job whose stack cannot be unwound (no unwinding in `panic = "abort"` builds, or
/// the thread's state is gone): its stack is leaked, never reused, so whatever lives on it stays
/// valid for ever, as `Pin` requires of memory that was never dropped.
pub(crate) fn leak_suspended(fiber: FiberBox) {
    fiber.leak();
}

/// Every leaked fiber, chained through `next_leaked`.
static LEAKED: AtomicPtr<Fiber> = AtomicPtr::new(ptr::null_mut());
/// How many paused jobs this process has given up by leaking their stacks.
static LEAKED_JOBS: AtomicUsize = AtomicUsize::new(0);

/// How many paused jobs the process has ended by leaking them: their stacks are never freed or
/// reused, so whatever lives on them stays valid (see [`Job::leak`](crate::Job::leak)).
pub fn leaked_jobs() -> usize {
    LEAKED_JOBS.load(Ordering::Relaxed)
}

impl<R: 'static> crate::job::Job<R> {
    /// End a paused job without running anything on its stack, and never free or reuse that stack:
    /// whatever lives on it (a local whose address was published, a pinned value) stays valid for
    /// the life of the process. This is what OpenSSL does with every job still paused when its thread
    /// exits. The destructors of what the closure owns do not run. The job is counted in
    /// [`leaked_jobs`](crate::leaked_jobs).
    ///
    /// The C library ends C jobs paused at thread exit this way: whether their frames may be
    /// abandoned and their memory reused cannot be known.
    pub fn leak(mut self) {
        let t = thread();
        if let Some(fiber) = self.take_fiber_in(t) {
            leak_suspended(fiber);
        }
    }

    /// Free a paused job without unwinding its stack: the job's code never runs again, the
    /// destructors of what its closure owns do not run, and the job goes back to the pool for reuse.
    ///
    /// Dropping a [`Job`](crate::Job) is the safe way to end a paused job; this exists for jobs whose
    /// stacks hold foreign frames that cannot be unwound, such as the C library's jobs (C code built
    /// without unwind tables aborts an unwind). OpenSSL has no counterpart: it leaks such jobs.
    ///
    /// # Safety
    ///
    /// Nothing on the job's stack may rely on being dropped before its memory is reused: no value
    /// pinned on it (a pinned future, an intrusive list node), no guard whose destructor must run.
    /// A job whose stack holds only C frames and plain data qualifies.
    pub unsafe fn discard(mut self) {
        let t = thread();
        let Some(fiber) = self.take_fiber_in(t) else {
            return;
        };
        // SAFETY: the caller vouches for what lives on the job's stack.
        if unsafe { fiber.reset_without_unwinding() } {
            crate::job::release_finished(t, fiber);
        } else {
            leak_suspended(fiber);
        }
    }
}

fn allocate_stack() -> Option<Stack> {
    if !uses_caller_stacks() {
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

/// Entry point of every job fiber: run one job after another, for as long as the fiber lives.
extern "C" fn fiber_root(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is the `Fiber` given to asyncjob_fiber_create, which outlives its raw fiber. Its
    // owner is a `FiberBox`, which asserts no uniqueness, so this shared reference may coexist with
    // the owner's moves and with other shared references.
    let fiber = unsafe { &*arg.cast::<Fiber>() };
    let mut message = first;
    loop {
        // An idle fiber is only ever entered by `Fiber::launch` (resume and cancel go to suspended
        // fibers), so every message arriving here is a launcher.
        // SAFETY: `launch` passes the address of a `Launch` on its own stack, alive until this
        // fiber switches back; it holds a closure of type `Option<F>` and the matching
        // `run_job::<F, R>`.
        let launch = unsafe { *message.cast::<Launch>() };
        // SAFETY: as above.
        unsafe { (launch.run)(launch.closure, fiber) };
        // SAFETY: this fiber is running, and its resumer waits in `switch_in` for this exit.
        message = unsafe {
            sys::asyncjob_fiber_switch(
                fiber.raw.get(),
                fiber.resumer.get(),
                EXIT_FINISHED as *mut c_void,
            )
        };
    }
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

/// Runs one job on its fiber's stack.
///
/// # Safety
///
/// `closure` must point to a live `Option<F>` holding the job's closure, and the fiber's output slot
/// must point to a live `Option<thread::Result<R>>` whenever the job finishes.
unsafe fn run_job<F: FnOnce() -> R, R>(closure: *mut (), fiber: &Fiber) {
    // SAFETY: guaranteed by the caller; the closure is moved onto this stack before the first pause,
    // so the resumer's copy may go away afterwards.
    let f = unsafe { (*closure.cast::<Option<F>>()).take() }.expect("the closure is launched once");
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let foreign = AbortOnForeignUnwind;
        let r = f();
        std::mem::forget(foreign);
        r
    }));
    let output = fiber.output.get().cast::<Option<thread::Result<R>>>();
    // SAFETY: whoever resumed this job last (start or resume of a `Job<R>` with the same `R`) set the
    // output slot and waits in `switch_in` until this fiber switches out.
    unsafe { *output = Some(result) };
}

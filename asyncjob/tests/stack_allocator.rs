//! `set_stack_allocator` (`ASYNC_set_mem_functions`): process-wide, so this binary runs alone, without
//! a test harness.

#[cfg(unix)]
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use asyncjob::{Error, Resumed, StackAllocator, StackMemory, Started};

const SIZE: usize = 128 * 1024;
/// Inaccessible memory below every stack, as the trait requires.
const GUARD: usize = 64 * 1024;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static RELEASED: AtomicUsize = AtomicUsize::new(0);
static REFUSE: AtomicBool = AtomicBool::new(false);

/// Fresh mappings of GUARD + SIZE bytes whose lowest GUARD bytes are `PROT_NONE`.
struct GuardedStacks;

// SAFETY: hands out SIZE fresh read-write bytes above a GUARD-byte PROT_NONE region, used by nothing
// else until `release` unmaps them.
unsafe impl StackAllocator for GuardedStacks {
    fn allocate(&self) -> Option<StackMemory> {
        if REFUSE.load(Ordering::SeqCst) {
            return None;
        }
        #[cfg(unix)]
        {
            // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
            let start = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    GUARD + SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if start == libc::MAP_FAILED {
                return None;
            }
            // SAFETY: the lowest GUARD bytes of the mapping just made.
            let rc = unsafe { libc::mprotect(start, GUARD, libc::PROT_NONE) };
            assert_eq!(rc, 0, "mprotect");
            ALLOCATED.fetch_add(1, Ordering::SeqCst);
            let base = NonNull::new(start.cast::<u8>().wrapping_add(GUARD))?;
            Some(StackMemory { base, size: SIZE })
        }
        #[cfg(not(unix))]
        None
    }

    fn release(&self, stack: StackMemory) {
        assert_eq!(stack.size, SIZE);
        RELEASED.fetch_add(1, Ordering::SeqCst);
        #[cfg(unix)]
        {
            let start = stack.base.as_ptr().wrapping_sub(GUARD);
            // SAFETY: the whole mapping made by `allocate` for this stack, released once.
            let rc = unsafe { libc::munmap(start.cast(), GUARD + SIZE) };
            assert_eq!(rc, 0, "munmap");
        }
    }
}

/// Never used: proves a second `set` before the first allocation replaces the first.
struct Unused;
// SAFETY: never hands out memory.
unsafe impl StackAllocator for Unused {
    fn allocate(&self) -> Option<StackMemory> {
        panic!("the replaced allocator must not be used")
    }
    fn release(&self, _: StackMemory) {}
}

fn main() {
    if cfg!(windows) {
        // The operating system owns fiber stacks there, as in OpenSSL's Windows build.
        assert_eq!(
            asyncjob::set_stack_allocator(Box::new(Unused)),
            Err(Error::Unsupported)
        );
        println!("1 passed, 0 failed");
        return;
    }
    let mut passed = 0;
    assert!(!asyncjob::stack_allocator_locked());
    // An empty (0, 0) pool allocates no stack, so it does not lock the allocator.
    asyncjob::init_thread(0, 0).unwrap();
    assert!(!asyncjob::stack_allocator_locked());
    assert_eq!(asyncjob::set_stack_allocator(Box::new(Unused)), Ok(()));
    assert_eq!(
        asyncjob::set_stack_allocator(Box::new(GuardedStacks)),
        Ok(()),
        "set twice before use"
    );
    passed += 1;

    // The first job takes its stack from the custom allocator, and locks it in.
    let job = match asyncjob::start(None, || {
        let on_stack = 0u8;
        asyncjob::pause();
        std::hint::black_box(&on_stack) as *const u8 as usize
    }) {
        Ok(Started::Paused(job)) => job,
        _ => panic!("expected PAUSE"),
    };
    assert_eq!(ALLOCATED.load(Ordering::SeqCst), 1);
    assert!(asyncjob::stack_allocator_locked());
    assert_eq!(
        asyncjob::set_stack_allocator(Box::new(GuardedStacks)),
        Err(Error::AllocatorLocked)
    );
    passed += 1;

    // The job really ran on that memory.
    let address = match job.resume() {
        Ok(Resumed::Finished(a)) => a,
        _ => panic!("expected FINISH"),
    };
    assert!(address != 0);
    passed += 1;

    // When the allocator has nothing, the start reports NO_JOBS and hands the closure back.
    REFUSE.store(true, Ordering::SeqCst);
    let held = match asyncjob::start(None, || {
        asyncjob::pause();
    }) {
        Ok(Started::Paused(job)) => job, // reuses the pooled stack
        _ => panic!("expected PAUSE on the pooled job"),
    };
    assert!(matches!(
        asyncjob::start(None, || 1),
        Ok(Started::NoJobs(_))
    ));
    // Pre-creation stops silently.
    drop(held);
    asyncjob::cleanup_thread().unwrap();
    asyncjob::init_thread(3, 3).unwrap();
    assert_eq!(asyncjob::pool_stats().map(|s| s.created), Some(0));
    passed += 1;

    // Every stack goes back to the allocator when its job is destroyed.
    REFUSE.store(false, Ordering::SeqCst);
    asyncjob::init_thread(2, 2).unwrap();
    assert_eq!(ALLOCATED.load(Ordering::SeqCst), 3);
    asyncjob::cleanup_thread().unwrap();
    assert_eq!(RELEASED.load(Ordering::SeqCst), 3);
    // Still locked after cleanup, as in OpenSSL.
    assert_eq!(
        asyncjob::set_stack_allocator(Box::new(GuardedStacks)),
        Err(Error::AllocatorLocked)
    );
    passed += 1;

    // A thread that exits without cleanup_thread frees its idle jobs; its paused job is leaked, as
    // in OpenSSL (it may borrow thread-locals that are already gone), and counted.
    let allocated = ALLOCATED.load(Ordering::SeqCst);
    let released = RELEASED.load(Ordering::SeqCst);
    let leaked = asyncjob::leaked_jobs();
    std::thread::spawn(|| {
        thread_local! {
            static KEEP: std::cell::RefCell<Option<asyncjob::Job<()>>> =
                const { std::cell::RefCell::new(None) };
        }
        asyncjob::init_thread(3, 3).unwrap();
        let job = match asyncjob::start(None, asyncjob::pause) {
            Ok(Started::Paused(job)) => job,
            _ => panic!("expected PAUSE"),
        };
        // Parked in thread-local storage, so the thread's own teardown drops it.
        KEEP.with(|k| *k.borrow_mut() = Some(job));
    })
    .join()
    .unwrap();
    // KEEP was first used after the pool was made, so it is destroyed before asyncjob's own exit
    // marker. glibc: asyncjob recognises the thread-local destructors on the stack and leaks the
    // job. Elsewhere (musl, macOS, Windows) only the marker is known, so the job is unwound as before
    // it (the documented limit, asyncjob's crate docs "Panics and dropped jobs").
    let leaks_at_exit = cfg!(all(target_os = "linux", target_env = "gnu"));
    assert_eq!(ALLOCATED.load(Ordering::SeqCst) - allocated, 3);
    assert_eq!(
        RELEASED.load(Ordering::SeqCst) - released,
        if leaks_at_exit { 2 } else { 3 },
        "the idle stacks went back at thread exit"
    );
    assert_eq!(
        asyncjob::leaked_jobs() - leaked,
        usize::from(leaks_at_exit),
        "the paused job was leaked (glibc) or unwound (elsewhere)"
    );
    passed += 1;
    println!("{passed} passed, 0 failed");
}

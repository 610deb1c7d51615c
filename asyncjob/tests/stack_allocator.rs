//! `set_stack_allocator` (`ASYNC_set_mem_functions`): process-wide, so this binary runs alone, without
//! a test harness.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use asyncjob::{Error, Resumed, StackAllocator, StackMemory, Started};

const SIZE: usize = 128 * 1024;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static RELEASED: AtomicUsize = AtomicUsize::new(0);
static REFUSE: AtomicBool = AtomicBool::new(false);

struct HeapStacks;

fn layout() -> Layout {
    Layout::from_size_align(SIZE, 64).expect("layout")
}

// SAFETY: hands out fresh heap blocks of SIZE bytes that nothing else uses until `release`.
unsafe impl StackAllocator for HeapStacks {
    fn allocate(&self) -> Option<StackMemory> {
        if REFUSE.load(Ordering::SeqCst) {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc(layout()) })?;
        ALLOCATED.fetch_add(1, Ordering::SeqCst);
        Some(StackMemory { base, size: SIZE })
    }

    fn release(&self, stack: StackMemory) {
        assert_eq!(stack.size, SIZE);
        RELEASED.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `stack` came from `allocate` with the same layout and is released once.
        unsafe { dealloc(stack.base.as_ptr(), layout()) };
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
        asyncjob::set_stack_allocator(Box::new(HeapStacks)),
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
        asyncjob::set_stack_allocator(Box::new(HeapStacks)),
        Err(Error::AllocatorLocked)
    );
    passed += 1;

    // The job really ran on that memory (the guard-less custom stack).
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
        asyncjob::set_stack_allocator(Box::new(HeapStacks)),
        Err(Error::AllocatorLocked)
    );
    passed += 1;

    // A thread that exits without cleanup_thread frees its idle jobs, and its paused job is
    // unwound and freed too (OpenSSL leaks the paused one).
    let allocated = ALLOCATED.load(Ordering::SeqCst);
    let released = RELEASED.load(Ordering::SeqCst);
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
    assert_eq!(ALLOCATED.load(Ordering::SeqCst) - allocated, 3);
    assert_eq!(
        RELEASED.load(Ordering::SeqCst) - released,
        3,
        "every stack went back at thread exit"
    );
    passed += 1;
    println!("{passed} passed, 0 failed");
}

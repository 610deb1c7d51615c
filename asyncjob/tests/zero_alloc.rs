//! Start, pause, resume and finish on a warm pool make no heap allocation at all.
//! A counting global allocator sees every allocation of the process; this binary has no test harness,
//! so nothing else runs while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use asyncjob::{Resumed, Started, WaitCtx};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cycle(ctx: &WaitCtx, payload: [u8; 16]) -> u32 {
    // start -> pause -> resume -> finish, with a captured 16-byte value and a wait context.
    let job = match asyncjob::start(Some(ctx), move || {
        asyncjob::pause();
        u32::from(payload[0]) + u32::from(payload[15])
    }) {
        Ok(Started::Paused(job)) => job,
        _ => panic!("expected PAUSE"),
    };
    let paused_sum = match job.resume() {
        Ok(Resumed::Finished(v)) => v,
        _ => panic!("expected FINISH"),
    };
    // start -> finish without a pause.
    let finished = match asyncjob::start(None, move || u32::from(payload[1])) {
        Ok(Started::Finished(v)) => v,
        _ => panic!("expected FINISH"),
    };
    // Pause blocking and queries inside a job.
    let blocked = match asyncjob::start(Some(ctx), || {
        let guard = asyncjob::block_pause();
        asyncjob::pause();
        drop(guard);
        u32::from(asyncjob::current_job().is_some())
    }) {
        Ok(Started::Finished(v)) => v,
        _ => panic!("expected FINISH"),
    };
    paused_sum + finished + blocked
}

fn main() {
    asyncjob::init_thread(4, 4).expect("init");
    let ctx = WaitCtx::new();
    let mut payload = [0u8; 16];
    payload[0] = 1;
    payload[1] = 2;
    payload[15] = 3;
    // Warm up: the thread's fiber context and thread-locals come to life on first use.
    for _ in 0..10 {
        assert_eq!(cycle(&ctx, payload), 7);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let rounds = 10_000;
    for _ in 0..rounds {
        assert_eq!(cycle(&ctx, payload), 7);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("{allocations} heap allocations in {rounds} rounds of start/pause/resume/finish");
    assert_eq!(allocations, 0, "the steady state must not allocate");
    println!("1 passed, 0 failed");
}

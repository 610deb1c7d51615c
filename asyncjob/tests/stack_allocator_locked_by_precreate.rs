//! Pre-creating jobs in `init_thread(n, n)` allocates stacks, which locks the stack allocator, as in
//! OpenSSL. Process-wide state: a binary of its own.

use asyncjob::{Error, StackAllocator, StackMemory};

struct Never;
// SAFETY: never hands out memory.
unsafe impl StackAllocator for Never {
    fn allocate(&self) -> Option<StackMemory> {
        None
    }
    fn release(&self, _: StackMemory) {}
}

fn main() {
    if cfg!(windows) {
        // The operating system owns fiber stacks there, as in OpenSSL's Windows build.
        assert_eq!(
            asyncjob::set_stack_allocator(Box::new(Never)),
            Err(Error::Unsupported)
        );
        println!("1 passed, 0 failed");
        return;
    }
    assert!(!asyncjob::stack_allocator_locked());
    asyncjob::init_thread(1, 1).unwrap();
    assert!(asyncjob::stack_allocator_locked());
    assert_eq!(
        asyncjob::set_stack_allocator(Box::new(Never)),
        Err(Error::AllocatorLocked)
    );
    // The default allocator stays in charge.
    assert!(matches!(
        asyncjob::start(None, || 5),
        Ok(asyncjob::Started::Finished(5))
    ));
    println!("1 passed, 0 failed");
}

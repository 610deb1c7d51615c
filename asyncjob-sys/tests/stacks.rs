//! Guarded stacks from asyncjob_stack_alloc.
#![cfg(unix)]

mod support;

use asyncjob_sys as sys;
use support::{Stack, page_size};

const EINVAL: i32 = 22;
const ENOMEM: i32 = 12;

#[test]
fn a_stack_has_a_guard_and_at_least_the_requested_size() {
    let ps = page_size();
    assert!(ps.is_power_of_two() && ps >= 4096);
    for request in [1, ps - 1, ps, ps + 1, 64 * 1024, 1024 * 1024 + 3] {
        let stack = Stack::new(request).expect("stack");
        let s = &stack.0;
        assert!(s.size >= request, "usable {} < requested {request}", s.size);
        assert_eq!(s.size % ps, 0);
        assert!(s.size < request + ps);
        assert_ne!(s.guard, sys::ASYNCJOB_GUARD_NONE);
        assert!(s.guard == sys::ASYNCJOB_GUARD_MADVISE || s.guard == sys::ASYNCJOB_GUARD_MPROTECT);
        assert_eq!(s.base as usize % ps, 0);
        assert_eq!(
            s.mapping as usize + ps,
            s.base as usize,
            "one guard page right below the stack"
        );
        assert_eq!(s.mapping_size, s.size + ps);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn linux_6_13_and_later_use_madvise_guards() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    // Under user-mode emulation (qemu-user runs this binary on another architecture's kernel) the
    // madvise guard may be accepted but ignored; the allocator must notice and use mprotect.
    let kernel_arch = std::fs::read_to_string("/proc/sys/kernel/arch").unwrap_or_default();
    let emulated = !kernel_arch.trim().is_empty() && kernel_arch.trim() != std::env::consts::ARCH;
    let stack = Stack::new(16 * 1024).expect("stack");
    if emulated {
        assert_ne!(stack.0.guard, sys::ASYNCJOB_GUARD_NONE);
    } else if version >= (6, 13) {
        assert_eq!(
            stack.0.guard,
            sys::ASYNCJOB_GUARD_MADVISE,
            "kernel {}",
            release.trim()
        );
    } else {
        assert_eq!(
            stack.0.guard,
            sys::ASYNCJOB_GUARD_MPROTECT,
            "kernel {}",
            release.trim()
        );
    }
}

#[test]
fn bad_sizes_are_rejected_cleanly() {
    assert_eq!(Stack::new(0).err(), Some(EINVAL));
    assert_eq!(Stack::new(usize::MAX).err(), Some(ENOMEM));
    assert_eq!(Stack::new(usize::MAX - page_size()).err(), Some(ENOMEM));
    // SAFETY: a null out pointer must be rejected without being written to.
    let rc = unsafe { sys::asyncjob_stack_alloc(4096, core::ptr::null_mut()) };
    assert_eq!(rc, EINVAL);
    // SAFETY: freeing a null stack is a documented no-op.
    unsafe { sys::asyncjob_stack_free(core::ptr::null_mut()) };
}

#[test]
fn freeing_twice_is_harmless() {
    let mut stack = Stack::new(8192).expect("stack");
    // SAFETY: the stack came from asyncjob_stack_alloc; free zeroes it, so the second free (and the
    // one in Drop) sees a null mapping and does nothing.
    unsafe { sys::asyncjob_stack_free(&mut stack.0) };
    assert!(stack.0.mapping.is_null() && stack.0.base.is_null() && stack.0.size == 0);
}

#[cfg(target_os = "linux")]
fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("maps")
        .lines()
        .count()
}

/// More guarded stacks than `vm.max_map_count` (65530) would allow with one mapping each; with
/// mprotect guards (two mappings per stack) the allocator must run out cleanly instead.
#[test]
fn many_guarded_stacks_stay_under_the_map_count() {
    const COUNT: usize = 100_000;
    let mut stacks = Vec::with_capacity(COUNT);
    let mut error = None;
    for _ in 0..COUNT {
        match Stack::new(16 * 1024) {
            Ok(stack) => stacks.push(stack),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(!stacks.is_empty());
    assert!(stacks.iter().all(|s| s.0.guard != sys::ASYNCJOB_GUARD_NONE));
    if stacks[0].0.guard == sys::ASYNCJOB_GUARD_MADVISE {
        assert_eq!(error, None, "madvise guards need no extra mapping");
        assert_eq!(stacks.len(), COUNT);
        #[cfg(target_os = "linux")]
        {
            let maps = map_count();
            assert!(maps < 65_530, "{maps} mappings for {COUNT} stacks");
        }
    } else if let Some(e) = error {
        assert_eq!(e, ENOMEM, "running out of mappings reports ENOMEM");
    }
    drop(stacks);
    // Everything was returned: a fresh stack still works.
    let again = Stack::new(16 * 1024).expect("stack after freeing");
    assert_ne!(again.0.guard, sys::ASYNCJOB_GUARD_NONE);
}

//! Behaviour that ends or marks a process: run in a child copy of this test binary, which is told
//! what to do through an environment variable, and judged from its exit status and output.

use std::process::{Command, Output};

const ROLE: &str = "ASYNCJOB_CHILD_ROLE";

/// Run the single test `name` of this binary in a child with `role` set.
fn child(name: &str, role: &str, extra_env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, role);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn child")
}

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(pad[0])
}

#[test]
fn stack_overflow_in_a_job_hits_the_guard_page_and_aborts_with_a_message() {
    if role().as_deref() == Some("overflow") {
        let _ = asyncjob::start(None, || recurse(0));
        println!("ran on past the stack");
        return;
    }
    let out = child(
        "stack_overflow_in_a_job_hits_the_guard_page_and_aborts_with_a_message",
        "overflow",
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child must die: {stdout}");
    assert!(!stdout.contains("ran on past the stack"));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.signal().is_some(),
            "killed by a signal, got {:?}",
            out.status
        );
    }
    assert!(
        stderr.contains("stack overflow"),
        "a clear message, got: {stderr}"
    );
}

#[test]
fn a_panic_inside_a_job_can_print_a_full_backtrace_on_the_default_stack() {
    if role().as_deref() == Some("backtrace") {
        let caught = std::panic::catch_unwind(|| {
            let _ = asyncjob::start(None, || -> u8 {
                asyncjob::pause_blocked_count();
                panic!("panic inside the job")
            });
        });
        assert!(caught.is_err());
        println!("caught in the caller");
        return;
    }
    let out = child(
        "a_panic_inside_a_job_can_print_a_full_backtrace_on_the_default_stack",
        "backtrace",
        &[("RUST_BACKTRACE", "full")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(stdout.contains("caught in the caller"));
    assert!(stderr.contains("panic inside the job"), "{stderr}");
    assert!(stderr.contains("stack backtrace"), "{stderr}");
}

#[test]
fn the_man_page_example_prints_the_eight_expected_lines() {
    if !cfg!(unix) {
        return;
    }
    // The example binary sits next to the test binaries' directory (target/<profile>/examples).
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = profile_dir.join("examples").join("man_page");
    assert!(
        example.exists(),
        "cargo builds examples for `cargo test`: {}",
        example.display()
    );
    let out = Command::new(example).output().unwrap();
    assert!(out.status.success());
    let expected = "Starting...\n\
                    Executing within a job\n\
                    Passed in message is: Hello world!\n\
                    Job was paused\n\
                    Waiting for the job to be woken up\n\
                    Resumed the job after a pause\n\
                    Job finished with return value 1\n\
                    Finishing\n";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// A switch hook that panics when control leaves a job. Before the fix the panic dropped the paused
/// job's fiber and freed its stack under live frames (a `Job::discard` reached from safe code).
struct PanickingHook;
impl asyncjob::SwitchHook for PanickingHook {
    fn enter(&self, _job_word: usize, _first_entry: bool) -> usize {
        0
    }
    fn leave(&self, _token: usize) -> usize {
        panic!("hook panics on leave")
    }
}
static PANICKING_HOOK: PanickingHook = PanickingHook;

#[test]
fn a_panicking_switch_hook_aborts_the_process_with_a_message() {
    if role().as_deref() == Some("hook") {
        assert!(asyncjob::set_switch_hook(&PANICKING_HOOK));
        let caught = std::panic::catch_unwind(|| {
            let _ = asyncjob::start(None, || {
                let pinned = [7u8; 64];
                asyncjob::pause();
                std::hint::black_box(&pinned);
            });
        });
        println!("survived the hook's panic: {}", caught.is_err());
        return;
    }
    let out = child(
        "a_panicking_switch_hook_aborts_the_process_with_a_message",
        "hook",
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("survived"),
        "the process went on: {stdout}"
    );
    assert!(!out.status.success());
    assert!(stderr.contains("hook panics on leave"), "{stderr}");
    assert!(
        stderr.contains("asyncjob: a SwitchHook panicked"),
        "a clear message, got: {stderr}"
    );
}

/// `pthread_exit` inside a job starts glibc's forced unwind. It cannot continue past the job's stack,
/// and before the fix the job's root caught it and glibc aborted with "FATAL: exception not rethrown".
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn pthread_exit_inside_a_job_aborts_with_a_message() {
    if role().as_deref() == Some("pthread_exit") {
        let t = std::thread::spawn(|| {
            // Declared "C-unwind": glibc's forced unwind leaves pthread_exit (the libc crate's
            // "C" declaration would make that unwind undefined behaviour in Rust).
            unsafe extern "C-unwind" {
                fn pthread_exit(retval: *mut std::ffi::c_void) -> !;
            }
            let _ = asyncjob::start(None, || {
                // SAFETY: ends the calling thread; nothing on this thread is used afterwards.
                unsafe { pthread_exit(std::ptr::null_mut()) }
            });
            println!("start returned");
        });
        let _ = t.join();
        println!("the process went on");
        return;
    }
    let out = child(
        "pthread_exit_inside_a_job_aborts_with_a_message",
        "pthread_exit",
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("the process went on"), "{stdout}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains("asyncjob: pthread_exit or pthread_cancel"),
        "a clear message, got: {stderr}"
    );
}

#[inline(never)]
fn resumer_of_the_outer_job() -> String {
    let inner = match asyncjob::start(None, asyncjob::pause) {
        Ok(asyncjob::Started::Paused(job)) => job,
        _ => panic!("the inner job did not pause"),
    };
    let outer = asyncjob::start(None, move || {
        // Drop a paused job from inside this one: a switch into it and back.
        drop(inner);
        std::backtrace::Backtrace::force_capture().to_string()
    });
    match outer {
        Ok(asyncjob::Started::Finished(trace)) => trace,
        _ => panic!("the outer job did not finish"),
    }
}

/// A backtrace taken in a job after it resumed another job (here: dropped a paused one) still walks
/// into the code that resumed it. Before the fix the switch back from the inner job overwrote the
/// outer job's unwind link with the inner job's stack, and walkers followed stale frames (aarch64:
/// a SIGSEGV inside the panic hook's backtrace).
#[test]
fn a_backtrace_after_a_nested_switch_still_reaches_the_resumer() {
    if role().as_deref() == Some("nested_backtrace") {
        let trace = resumer_of_the_outer_job();
        // The whole chain: the resumer, and the test function that called it on the thread.
        let reaches = trace.contains("resumer_of_the_outer_job")
            && trace.contains("a_backtrace_after_a_nested_switch_still_reaches_the_resumer");
        let frames = trace
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count();
        println!("reaches the resumer: {reaches}; frames: {frames}");
        return;
    }
    if !asyncjob::backend().ends_with("-asm") {
        return; // only the asm backends link a fiber's frames to its resumer's
    }
    let out = child(
        "a_backtrace_after_a_nested_switch_still_reaches_the_resumer",
        "nested_backtrace",
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reaches the resumer: true"), "{stdout}");
}

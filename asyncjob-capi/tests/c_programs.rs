//! Builds the C programs in `tests/c/` with the system C compiler and runs them against the library
//! this package just built (`libasyncjob.so`, and `libasyncjob.a` for the static link), and as a
//! reference against the system libcrypto. Linux only: the programs use POSIX and the libcrypto
//! builds need the OpenSSL 3 development files.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a test program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Our header and `-lasyncjob`.
    AsyncJob,
    /// `<openssl/async.h>` and `-lcrypto`: the reference.
    LibCrypto,
    /// Our header, `-lasyncjob` first and then `-lcrypto`, so our `ASYNC_*` win and libcrypto's other
    /// functions (error queue, library contexts) are there.
    AsyncJobThenCrypto,
    /// Our header and `libasyncjob.a`.
    Static,
    /// Like `AsyncJob`, with the C code built without unwind tables: jobs left paused at thread exit
    /// must still end cleanly (they are leaked, never unwound through C frames).
    AsyncJobNoUnwindTables,
    /// Our header only, no ASYNC library: the program `dlopen`s `libasyncjob.so` itself.
    DlOpen,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `libasyncjob.so` and `libasyncjob.a`.
///
/// `cargo test` builds a library target only in the crate types a test can link, and this one has
/// no rlib (the safe crate's `libasyncjob.rlib` would collide with it), so the C libraries are built
/// here, once per test process, by a nested `cargo build` into the same target directory and
/// profile (cargo holds no lock while tests run).
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--lib",
                "-p",
                "asyncjob-capi",
                "--profile",
                profile,
            ])
            .arg("--manifest-path")
            .arg(manifest_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("run cargo build for the C libraries");
        assert!(status.success(), "cargo build -p asyncjob-capi failed");
        for lib in ["libasyncjob.so", "libasyncjob.a"] {
            assert!(
                profile_dir.join(lib).exists(),
                "{lib} not found in {}",
                profile_dir.display()
            );
        }
        profile_dir.to_path_buf()
    })
    .clone()
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&dir).expect("create the C test output directory");
    dir
}

/// Compiles `tests/c/<name>.c` into an executable linked as `link`. Each call writes a file of its
/// own: tests run in parallel, and one rewriting an executable that another runs made the other
/// fail to start it ("Permission denied", exit status 126).
fn build(name: &str, link: Link) -> PathBuf {
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let src = manifest_dir().join("tests/c").join(format!("{name}.c"));
    let bin = out_dir().join(format!("{name}-{link:?}-{n}"));
    let libdir = lib_dir();
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg("-I")
        .arg(manifest_dir().join("tests/c"))
        .arg("-o")
        .arg(&bin)
        .arg(&src);
    match link {
        Link::AsyncJob | Link::AsyncJobNoUnwindTables => {
            if link == Link::AsyncJobNoUnwindTables {
                cmd.args(["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]);
            }
            cmd.arg(format!("-L{}", libdir.display()))
                .arg("-lasyncjob")
                .arg(format!("-Wl,-rpath,{}", libdir.display()));
        }
        Link::LibCrypto => {
            cmd.arg("-DTEST_OPENSSL").arg("-lcrypto");
        }
        Link::AsyncJobThenCrypto => {
            cmd.arg("-Wl,--no-as-needed")
                .arg(format!("-L{}", libdir.display()))
                .arg("-lasyncjob")
                .arg("-lcrypto")
                .arg(format!("-Wl,-rpath,{}", libdir.display()));
        }
        Link::DlOpen => {
            cmd.arg("-ldl");
        }
        Link::Static => {
            cmd.arg(libdir.join("libasyncjob.a")).args([
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]);
        }
    }
    cmd.arg("-lpthread");
    let out = cmd.output().expect("run the C compiler");
    assert!(
        out.status.success(),
        "compiling {name} ({link:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs a program (under `timeout`) and returns how it ended, whatever that was.
fn run_child(bin: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(bin)
        .args(args)
        .output()
        .expect("run the test program")
}

fn run(bin: &Path, args: &[&str]) -> Output {
    let out = run_child(bin, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a CHECK-based program and returns its number of checks, asserting none failed.
fn run_checks(name: &str, link: Link, args: &[&str]) -> usize {
    let out = run(&build(name, link), args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(" checks, "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(line.ends_with(" checks, 0 failures"), "{line}");
    let checks: usize = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad summary line {line}"));
    assert!(checks > 0);
    checks
}

/// The "expected output" of the example in ASYNC_start_job(3).
const MAN_PAGE_OUTPUT: &str = "Starting...
Executing within a job
Passed in message is: Hello world!
Job was paused
Waiting for the job to be woken up
Resumed the job after a pause
Job finished with return value 1
Finishing
";

#[test]
fn man_page_example_prints_the_expected_output() {
    let out = run(&build("example", Link::AsyncJob), &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), MAN_PAGE_OUTPUT);
}

#[test]
fn man_page_example_prints_the_same_with_libcrypto() {
    let out = run(&build("example", Link::LibCrypto), &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), MAN_PAGE_OUTPUT);
}

#[test]
fn api_behaves_like_openssl() {
    let ours = run_checks("api", Link::AsyncJob, &[]);
    let reference = run_checks("api", Link::LibCrypto, &[]);
    // The libasyncjob build also resumes a NULL-ctx job that OpenSSL cannot resume.
    assert!(ours >= reference, "{ours} < {reference}");
}

#[test]
fn api_works_from_the_static_library() {
    run_checks("api", Link::Static, &[]);
}

#[test]
fn libcrypto_integration_error_queue_libctx_and_cleanup() {
    run_checks("with_libcrypto", Link::AsyncJobThenCrypto, &[]);
    run_checks("with_libcrypto", Link::LibCrypto, &[]);
}

#[test]
fn a_backtrace_inside_a_job_reaches_the_caller_of_async_start_job() {
    run_checks("backtrace", Link::AsyncJob, &[]);
}

/// Backtraces that gdb takes at each call the x86_64 Linux entry thunks (`src/entry.rs`) make: at
/// the switches (made by the first halves as tail calls, so they return into the thunks) and in the
/// second halves. Each must walk through the thunk to the C code that called the entry point, which
/// needs the thunks' hand-written CFI to be right at each of those calls. The in-process
/// `backtrace.c` covers a trace taken inside a job; the pause's thunk is only ever on the stack
/// while the library's own code runs, hence the debugger.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_debugger_walks_through_the_entry_points_at_each_of_their_calls() {
    // Each breakpoint with the frames its backtraces must hold, from the first that names the
    // function stopped in (frames inlined into it come before): each right after the one before,
    // except after `GAP`: the first halves' frames, where the compiler did not make the switch a
    // tail call (as in the dev profile), and the frames of the job's own stack down to the
    // resumer's.
    const GAP: &str = "";
    let expected: &[(&str, &[&str])] = &[
        (
            "asyncjob_fiber_switch_back",
            &[
                "asyncjob_fiber_switch_back",
                GAP,
                "ASYNC_pause_job",
                "paused_job",
            ],
        ),
        (
            "asyncjob_fiber_switch_into",
            &[
                "asyncjob_fiber_switch_into",
                GAP,
                "ASYNC_start_job",
                "resume_here",
                "main",
            ],
        ),
        (
            "asyncjob::entry::pause_second_half",
            &[
                "pause_second_half",
                "ASYNC_pause_job",
                "paused_job",
                GAP,
                "ASYNC_start_job",
                "resume_here",
                "main",
            ],
        ),
        (
            "asyncjob::entry::resume_second_half",
            &[
                "resume_second_half",
                "ASYNC_start_job",
                "resume_here",
                "main",
            ],
        ),
    ];
    let bin = build("debugger", Link::AsyncJob);
    let mut script = String::from(
        "set pagination off\nset confirm off\nset debuginfod enabled off\n\
         set breakpoint pending on\n",
    );
    for (at, _) in expected {
        script +=
            &format!("break {at}\ncommands\nsilent\necho @@stop {at}\\n\nbt\ncontinue\nend\n");
    }
    script += "run\n";
    let script_path = bin.with_extension("gdb");
    std::fs::write(&script_path, script).expect("write the gdb script");
    let out = Command::new("timeout")
        .args(["120", "gdb", "-batch", "-nx", "-x"])
        .arg(&script_path)
        .arg(&bin)
        .output()
        .expect("run gdb under timeout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("debugger: "),
        "gdb ({}; it is needed, ci/setup.sh installs it) did not run the program through:\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" checks, 0 failures"), "{stdout}");
    for (at, chain) in expected {
        let marker = format!("@@stop {at}\n");
        let stops: Vec<&str> = stdout.split(&marker).skip(1).collect();
        assert!(!stops.is_empty(), "gdb never stopped at {at}:\n{stdout}");
        for stop in stops {
            let frames: Vec<&str> = stop
                .lines()
                .take_while(|l| l.starts_with('#'))
                .map(frame_function)
                .collect();
            assert!(
                walks_through(&frames, chain, GAP),
                "the backtrace at {at} does not go {chain:?}:\n{stop}"
            );
        }
    }
}

/// The function of a gdb backtrace line: `#1  0x... in NAME (...) from ...` or `#0  NAME (...) at ...`.
#[cfg(target_arch = "x86_64")]
fn frame_function(line: &str) -> &str {
    let rest = line
        .split_once(char::is_whitespace)
        .map_or("", |(_, r)| r.trim_start());
    let rest = match rest.split_once(" in ") {
        Some((addr, name)) if addr.starts_with("0x") => name,
        _ => rest,
    };
    rest.split(" (").next().unwrap_or(rest)
}

/// Whether `frames` hold `chain` in order from the first frame that names `chain[0]`, each frame
/// right after the one before, except after a `gap` entry. A frame names a function if it is that
/// function or a path ending in it.
#[cfg(target_arch = "x86_64")]
fn walks_through(frames: &[&str], chain: &[&str], gap: &str) -> bool {
    let names = |frame: &str, function: &str| {
        frame == function || frame.ends_with(&format!("::{function}"))
    };
    let mut at = None::<usize>;
    let mut after_gap = true;
    for &function in chain {
        if function == gap {
            after_gap = true;
            continue;
        }
        let from = at.map_or(0, |i| i + 1);
        let found = if after_gap {
            frames[from.min(frames.len())..]
                .iter()
                .position(|f| names(f, function))
                .map(|i| from + i)
        } else {
            frames
                .get(from)
                .filter(|f| names(f, function))
                .map(|_| from)
        };
        match found {
            Some(i) => at = Some(i),
            None => return false,
        }
        after_gap = false;
    }
    true
}

#[test]
fn deviations_are_safe() {
    run_checks("deviations", Link::AsyncJob, &[]);
}

#[test]
fn deviations_are_safe_in_c_built_without_unwind_tables() {
    run_checks("deviations", Link::AsyncJobNoUnwindTables, &[]);
}

#[test]
fn pool_cycles_on_several_threads_like_openssl() {
    run_checks("pool_cycles", Link::AsyncJob, &[]);
    run_checks("pool_cycles", Link::LibCrypto, &[]);
}

/// A job paused when its thread exits keeps its stack for good (a local it published stays intact
/// while other threads run many jobs), and args too large to copy give `ASYNC_ERR`: as in OpenSSL.
#[test]
fn paused_stacks_survive_thread_exit_and_huge_args_fail_cleanly() {
    run_checks("reliability", Link::AsyncJob, &[]);
    run_checks("reliability", Link::AsyncJobNoUnwindTables, &[]);
    run_checks("reliability", Link::LibCrypto, &[]);
}

/// The wait ctx that a job paused at thread exit still held is let go when the thread ends, so the
/// application's earlier `ASYNC_WAIT_CTX_free` runs the fd cleanups then (OpenSSL runs them at the
/// free). Needs `asyncjob::Job::leak` to let go of the job's wait context.
#[test]
fn wait_ctx_of_a_job_leaked_at_thread_exit_is_let_go() {
    run_checks("reliability", Link::AsyncJob, &["ctx_of_leaked_job"]);
    run_checks("reliability", Link::LibCrypto, &["ctx_of_leaked_job"]);
}

/// `pthread_exit` or a `pthread_cancel` acted on inside a job cannot end the thread from the job's
/// stack: the process aborts with a message naming the cause, instead of glibc's "FATAL: exception
/// not rethrown". Needs asyncjob to stop a forced unwind at the job's root.
#[test]
fn thread_exit_inside_a_job_aborts_with_a_message() {
    use std::os::unix::process::ExitStatusExt;
    let bin = build("reliability", Link::AsyncJob);
    for mode in ["pthread_exit", "pthread_cancel"] {
        let out = run_child(&bin, &[mode]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{mode}: {}\nstderr:\n{stderr}",
            out.status
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("asyncjob: ") && l.contains("pthread_exit")),
            "{mode}: no asyncjob message naming pthread_exit in:\n{stderr}"
        );
    }
}

/// After `dlclose(libasyncjob.so)` the overflow reporter it installed must not point into unmapped
/// code: faults still reach the application's handler (the library is linked `-z nodelete`).
#[test]
fn dlclose_leaves_fault_handling_intact() {
    let bin = build("dlclose", Link::DlOpen);
    let lib = lib_dir().join("libasyncjob.so");
    let out = run(&bin, &[lib.to_str().expect("UTF-8 path")]);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(" checks, 0 failures\n"));
}

#[test]
fn stack_allocator_functions() {
    run_checks("memfns", Link::AsyncJob, &[]);
    run_checks("memfns", Link::AsyncJob, &["precreate"]);
}

#[test]
fn no_heap_allocation_per_job_in_steady_state() {
    run_checks("allocs", Link::AsyncJob, &[]);
    // The same program against OpenSSL only reports its count (one malloc per start with args).
    let out = run(&build("allocs", Link::LibCrypto), &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("openssl: 1000 allocations for 1 jobs"));
}

#[test]
fn exports_exactly_the_async_api() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib_dir().join("libasyncjob.so"))
        .output()
        .expect("run nm");
    assert!(out.status.success());
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    names.sort();
    let mut expected = vec![
        "ASYNC_WAIT_CTX_clear_fd",
        "ASYNC_WAIT_CTX_free",
        "ASYNC_WAIT_CTX_get_all_fds",
        "ASYNC_WAIT_CTX_get_callback",
        "ASYNC_WAIT_CTX_get_changed_fds",
        "ASYNC_WAIT_CTX_get_fd",
        "ASYNC_WAIT_CTX_get_status",
        "ASYNC_WAIT_CTX_new",
        "ASYNC_WAIT_CTX_set_callback",
        "ASYNC_WAIT_CTX_set_status",
        "ASYNC_WAIT_CTX_set_wait_fd",
        "ASYNC_block_pause",
        "ASYNC_cleanup_thread",
        "ASYNC_get_current_job",
        "ASYNC_get_mem_functions",
        "ASYNC_get_wait_ctx",
        "ASYNC_init_thread",
        "ASYNC_is_capable",
        "ASYNC_pause_job",
        "ASYNC_set_mem_functions",
        "ASYNC_start_job",
        "ASYNC_unblock_pause",
    ];
    expected.sort_unstable();
    // Unversioned: nm prints no @VERSION suffix, and glibc binds such a definition to libcrypto's
    // NAME@OPENSSL_3.0.0 references under LD_PRELOAD.
    assert_eq!(names, expected);
}

#[test]
fn header_is_compatible_with_openssl_in_either_order() {
    let dir = out_dir();
    let probe = |first: &str, second: &str, lang: &str, tag: &str| {
        let src = dir.join(format!(
            "header-{tag}.{}",
            if lang == "c" { "c" } else { "cc" }
        ));
        // Conflicting prototypes or typedefs are hard errors when both headers are included; the
        // assertions pin the constants and the 3.2 declarations.
        let body = format!(
            "#include {first}\n#include {second}\n\
             typedef char check_err[ASYNC_ERR == 0 ? 1 : -1];\n\
             typedef char check_nojobs[ASYNC_NO_JOBS == 1 ? 1 : -1];\n\
             typedef char check_pause[ASYNC_PAUSE == 2 ? 1 : -1];\n\
             typedef char check_finish[ASYNC_FINISH == 3 ? 1 : -1];\n\
             typedef char check_st[ASYNC_STATUS_UNSUPPORTED == 0 && ASYNC_STATUS_ERR == 1 \
             && ASYNC_STATUS_OK == 2 && ASYNC_STATUS_EAGAIN == 3 ? 1 : -1];\n\
             typedef char check_fd[sizeof(OSSL_ASYNC_FD) == sizeof(int) && OSSL_BAD_ASYNC_FD == -1 ? 1 : -1];\n\
             typedef char check_pool[ASYNC_R_INVALID_POOL_SIZE == 103 ? 1 : -1];\n\
             int use(void);\n\
             int use(void) {{ ASYNC_stack_alloc_fn a = 0; ASYNC_stack_free_fn f = 0;\n\
               ASYNC_get_mem_functions(&a, &f); return ASYNC_set_mem_functions(a, f)\n\
               + ASYNC_is_capable(); }}\n"
        );
        std::fs::write(&src, body).expect("write the header probe");
        let compiler = if lang == "c" { "cc" } else { "c++" };
        let std = if lang == "c" {
            "-std=c99"
        } else {
            "-std=c++11"
        };
        let out = Command::new(compiler)
            .args([std, "-pedantic", "-Wall", "-Werror", "-fsyntax-only"])
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .arg(&src)
            .output()
            .expect("run the compiler");
        assert!(
            out.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    probe("\"asyncjob.h\"", "<stdio.h>", "c", "alone");
    probe("<openssl/async.h>", "\"asyncjob.h\"", "c", "openssl-first");
    probe("\"asyncjob.h\"", "<openssl/async.h>", "c", "ours-first");
    probe("\"asyncjob.h\"", "<openssl/ssl.h>", "c", "with-ssl");
    probe(
        "<openssl/async.h>",
        "\"asyncjob.h\"",
        "c++",
        "cxx-openssl-first",
    );
    probe(
        "\"asyncjob.h\"",
        "<openssl/async.h>",
        "c++",
        "cxx-ours-first",
    );
}

/// Smoke test of the offload fixture in `tests/offload/` (run in full, with Valgrind, `openssl
/// speed` and `s_server`, by `ci/step-46-offload.sh`): the provider's SHA-2 digests pause libssl's
/// jobs, and two concurrent TLS 1.3 handshakes (one pair abandoned while paused) driven by the
/// one-thread epoll driver give identical counts with libcrypto's ASYNC and with libasyncjob linked
/// before libcrypto, with a fresh fd per operation and with wait-context callbacks.
#[test]
fn offload_provider_tls_handshakes_count_the_same_on_both_backends() {
    let src = manifest_dir().join("tests/offload");
    let dir = out_dir().join("offload");
    std::fs::create_dir_all(&dir).expect("create the offload output directory");
    let libdir = lib_dir();
    let cc = || {
        let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
        cmd.args(["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"]);
        cmd
    };
    let compile = |cmd: &mut Command, what: &str| {
        let out = cmd.output().expect("run the C compiler");
        assert!(
            out.status.success(),
            "compiling {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let provider = dir.join("offload.so");
    compile(
        cc().args(["-fPIC", "-shared", "-o"])
            .arg(&provider)
            .arg(src.join("offload_provider.c"))
            .args(["-lcrypto", "-lpthread"]),
        "the offload provider",
    );
    let template =
        std::fs::read_to_string(src.join("offload.cnf.in")).expect("read offload.cnf.in");
    let conf = dir.join("offload.cnf");
    std::fs::write(
        &conf,
        template.replace("@MODULE@", provider.to_str().expect("UTF-8 path")),
    )
    .expect("write offload.cnf");
    let with_libcrypto = dir.join("tls_driver-libcrypto");
    compile(
        cc().arg("-o")
            .arg(&with_libcrypto)
            .arg(src.join("tls_driver.c"))
            .args(["-lssl", "-lcrypto"]),
        "tls_driver (libcrypto)",
    );
    let with_asyncjob = dir.join("tls_driver-asyncjob");
    compile(
        cc().arg("-o")
            .arg(&with_asyncjob)
            .arg(src.join("tls_driver.c"))
            .arg("-Wl,--no-as-needed")
            .arg(format!("-L{}", libdir.display()))
            .arg("-lasyncjob")
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .args(["-lssl", "-lcrypto"]),
        "tls_driver (libasyncjob)",
    );
    for (fd_mode, args) in [
        ("op", ["-n", "2", "-m", "fd", "-a", "2", "-q"]),
        ("ctx", ["-n", "2", "-m", "callback", "-a", "2", "-q"]),
    ] {
        let outputs: Vec<String> = [&with_libcrypto, &with_asyncjob]
            .into_iter()
            .map(|bin| {
                let out = Command::new("timeout")
                    .arg("60")
                    .arg(bin)
                    .args(args)
                    .env("OPENSSL_CONF", &conf)
                    .env("OFFLOAD_FD_MODE", fd_mode)
                    .env("OFFLOAD_LATENCY_US", "0")
                    .env_remove("OFFLOAD_BLOCK_EVERY")
                    .output()
                    .expect("run tls_driver");
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success() && stdout.ends_with("RESULT: OK\n"),
                    "{} {args:?} ({fd_mode}) failed ({}):\n{stdout}\n{}",
                    bin.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    stdout.contains("handshakes=1 pairs_done=1 abandoned=1 "),
                    "{stdout}"
                );
                stdout
            })
            .collect();
        assert_eq!(
            outputs[0], outputs[1],
            "counts differ ({fd_mode}, {args:?})"
        );
    }
}

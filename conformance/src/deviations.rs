//! Rows where OpenSSL is undefined, crashes or leaks (reference §10 and a few leaks). They are never
//! run against OpenSSL in-process: each is checked on asyncjob alone against our documented
//! deviation, or shown to be impossible to express in the safe API.

use asyncjob::{Error, Job, JobId, PauseBlock, Resumed, Started, WaitCtx, WaitKey};
use serde::Serialize;
use std::cell::Cell;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;

/// How a deviation row is established.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub enum Check {
    /// Ran on asyncjob and behaved as documented.
    Passed,
    /// Ran on asyncjob and did not behave as documented.
    Failed(String),
    /// Cannot be written in the safe API; a compile-time assertion in this crate pins that down.
    PreventedByTypes(&'static str),
    /// Not applicable to the Rust API.
    NotApplicable(&'static str),
}

/// One row of the deviations table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: &'static str,
    pub openssl: &'static str,
    pub asyncjob: &'static str,
    pub check: Check,
}

// Compile-time proof for the "prevented by the type system" rows: `<T as NotX<_>>::check` compiles
// only if exactly one impl applies, i.e. only if T does not implement X.
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}
trait NotSync<A> {
    fn check() {}
}
impl<T: ?Sized> NotSync<()> for T {}
impl<T: ?Sized + Sync> NotSync<u8> for T {}
trait NotClone<A> {
    fn check() {}
}
impl<T: ?Sized> NotClone<()> for T {}
impl<T: Clone> NotClone<u8> for T {}
const _: fn() = || {
    let _ = <Job<i32> as NotSend<_>>::check;
    let _ = <Job<i32> as NotSync<_>>::check;
    let _ = <Job<i32> as NotClone<_>>::check;
    let _ = <WaitCtx as NotSend<_>>::check;
    let _ = <JobId as NotSend<_>>::check;
    let _ = <PauseBlock as NotSend<_>>::check;
};

fn run_in_thread(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> Check {
    match std::thread::spawn(f).join() {
        Ok(Ok(())) => Check::Passed,
        Ok(Err(e)) => Check::Failed(e),
        Err(p) => Check::Failed(format!("panicked: {}", panic_text(&*p))),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

fn ensure(cond: bool, what: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.to_string()) }
}

fn paused<R>(s: Result<Started<impl FnOnce() -> R, R>, Error>) -> Result<Job<R>, String> {
    match s {
        Ok(Started::Paused(j)) => Ok(j),
        Ok(Started::Finished(_)) => Err("finished instead of pausing".into()),
        Ok(Started::NoJobs(_)) => Err("NoJobs".into()),
        Err(e) => Err(format!("start failed: {e:?}")),
    }
}

fn finished<R>(r: Result<Resumed<R>, asyncjob::ResumeError<R>>) -> Result<R, String> {
    match r {
        Ok(Resumed::Finished(v)) => Ok(v),
        Ok(Resumed::Paused(_)) => Err("paused instead of finishing".into()),
        Err(e) => Err(format!("resume failed: {:?}", e.error)),
    }
}

fn nested_start() -> Result<(), String> {
    let ctx = WaitCtx::new();
    let job = paused(asyncjob::start(Some(&ctx), || {
        let inner = asyncjob::start(None, || 1).map(|_| ()).err();
        let cur = asyncjob::current_job().is_some();
        asyncjob::pause();
        (inner, cur)
    }))?;
    let (inner, cur) = finished(job.resume())?;
    ensure(
        inner == Some(Error::Nested),
        &format!("inner start gave {inner:?}, not Err(Nested)"),
    )?;
    ensure(
        cur,
        "current_job() inside the outer job was lost after the nested call",
    )
}

fn nested_resume() -> Result<(), String> {
    let ctx = WaitCtx::new();
    let other = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        7
    }))?;
    let slot = Rc::new(Cell::new(Some(other)));
    let s2 = Rc::clone(&slot);
    let outer = asyncjob::start(Some(&ctx), move || {
        let j = s2.take().expect("job present");
        match j.resume() {
            Err(e) if e.error == Error::Nested => {
                s2.set(Some(e.job));
                1
            }
            _ => 0,
        }
    });
    let r = match outer {
        Ok(Started::Finished(v)) => v,
        _ => return Err("outer job did not finish".into()),
    };
    ensure(r == 1, "resume inside a job was not refused with Nested")?;
    let j = slot.take().ok_or("the refused job was not handed back")?;
    ensure(
        finished(j.resume())? == 7,
        "the refused job did not resume afterwards",
    )
}

fn pause_without_wait_ctx() -> Result<(), String> {
    let job = paused(asyncjob::start(None, || {
        asyncjob::pause();
        5
    }))?;
    ensure(job.wait_ctx().is_none(), "job without ctx reports one")?;
    ensure(finished(job.resume())? == 5, "wrong result")
}

fn cleanup_with_paused_jobs() -> Result<(), String> {
    let ctx = WaitCtx::new();
    let job = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        9
    }))?;
    let r = asyncjob::cleanup_thread();
    ensure(
        r == Err(Error::JobsOutstanding { count: 1 }),
        &format!("cleanup_thread gave {r:?}"),
    )?;
    ensure(
        finished(job.resume())? == 9,
        "resume after cleanup_thread did not finish",
    )?;
    match asyncjob::start(None, || 3) {
        Ok(Started::Finished(3)) => {}
        _ => return Err("start after cleanup did not work".into()),
    }
    ensure(
        asyncjob::cleanup_thread().is_ok(),
        "second cleanup_thread failed",
    )
}

struct SetOnDrop(Rc<Cell<bool>>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn drop_paused_job() -> Result<(), String> {
    asyncjob::init_thread(1, 0).map_err(|e| format!("{e:?}"))?;
    let dropped = Rc::new(Cell::new(false));
    let guard = SetOnDrop(Rc::clone(&dropped));
    let job = paused(asyncjob::start(None, move || {
        let _g = &guard;
        asyncjob::pause();
        1
    }))?;
    let before = asyncjob::pool_stats().ok_or("no pool")?;
    drop(job);
    ensure(dropped.get(), "the closure's destructors did not run")?;
    let after = asyncjob::pool_stats().ok_or("no pool")?;
    ensure(
        after.idle == before.idle + 1,
        "the stack did not go back to the pool",
    )?;
    // max 1: the only job must be usable again.
    match asyncjob::start(None, || 2) {
        Ok(Started::Finished(2)) => Ok(()),
        _ => Err("pool not usable after dropping a paused job".into()),
    }
}

/// Keeps the default panic hook from printing the two panics this check raises on purpose.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload().downcast_ref::<&str>();
            if !matches!(p, Some(&("boom" | "after pause"))) {
                prev(info);
            }
        }));
    });
}

fn panic_propagates() -> Result<(), String> {
    quiet_expected_panics();
    asyncjob::init_thread(1, 0).map_err(|e| format!("{e:?}"))?;
    let r = std::panic::catch_unwind(|| {
        asyncjob::start(None, || -> i32 { std::panic::panic_any("boom") }).map(|_| ())
    });
    let p = r.err().ok_or("start did not re-raise the panic")?;
    ensure(
        p.downcast_ref::<&str>() == Some(&"boom"),
        "wrong panic payload",
    )?;
    let ctx = WaitCtx::new();
    let job = paused(asyncjob::start(Some(&ctx), || -> i32 {
        asyncjob::pause();
        std::panic::panic_any("after pause")
    }))?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.resume().map(|_| ())));
    ensure(r.is_err(), "resume did not re-raise the panic")?;
    let stats = asyncjob::pool_stats().ok_or("no pool")?;
    ensure(
        stats.idle == 1 && stats.created == 1,
        &format!("pool after panics: {stats:?}"),
    )?;
    match asyncjob::start(None, || 4) {
        Ok(Started::Finished(4)) => Ok(()),
        _ => Err("pool not usable after a panic".into()),
    }
}

fn wait_ctx_kept_alive() -> Result<(), String> {
    let cleaned = Rc::new(Cell::new(0));
    let ctx = WaitCtx::new();
    let c2 = Rc::clone(&cleaned);
    ctx.set_wait_fd(
        WaitKey::from_addr(1),
        10,
        std::ptr::null_mut(),
        Some(Box::new(move |_, _, _| c2.set(c2.get() + 1))),
    );
    let job = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        asyncjob::current_wait_ctx().map(|c| c.all_fds())
    }))?;
    drop(ctx);
    ensure(
        cleaned.get() == 0,
        "cleanup ran while a paused job still uses the ctx",
    )?;
    let fds = finished(job.resume())?;
    ensure(
        fds == Some(vec![10]),
        &format!("ctx seen by the job after the caller dropped it: {fds:?}"),
    )?;
    ensure(
        cleaned.get() == 1,
        "cleanup did not run exactly once after the job ended",
    )
}

fn init_twice_frees_idle() -> Result<(), String> {
    asyncjob::init_thread(4, 4).map_err(|e| format!("{e:?}"))?;
    asyncjob::init_thread(3, 1).map_err(|e| format!("{e:?}"))?;
    let s = asyncjob::pool_stats().ok_or("no pool")?;
    ensure(
        s == asyncjob::PoolStats {
            max_size: 3,
            created: 1,
            idle: 1,
        },
        &format!("pool after re-init: {s:?}"),
    )
}

fn init_above_int_max() -> Result<(), String> {
    let big = i32::MAX as usize + 1;
    let r = asyncjob::init_thread(big, 0);
    ensure(
        matches!(r, Err(Error::InvalidPoolSize { .. })),
        &format!("init_thread(INT_MAX+1, 0) gave {r:?}"),
    )
}

fn child(exe: &Path, what: &str) -> Result<std::process::Output, String> {
    Command::new(exe)
        .args(["__child", what])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))
}

fn stack_overflow(exe: &Path) -> Result<(), String> {
    let out = child(exe, "overflow")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(
        !out.status.success() && !stdout.contains("SURVIVED"),
        "the overflowing job returned",
    )?;
    ensure(
        stdout.contains("entered"),
        "the child did not reach the job",
    )?;
    ensure(
        stderr.to_lowercase().contains("overflow"),
        &format!(
            "no overflow message on stderr ({}): {}",
            out.status,
            stderr.trim()
        ),
    )
}

/// Body of `__child overflow`: recurses inside a job until the guard page stops it.
pub fn overflow_child() {
    fn deep(n: u64) -> u64 {
        let buf = std::hint::black_box([n as u8; 512]);
        if n == u64::MAX {
            0
        } else {
            deep(n + 1) + u64::from(buf[7])
        }
    }
    let r = asyncjob::start(None, || {
        println!("entered");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        deep(0)
    });
    println!("SURVIVED {}", r.is_ok());
}

/// Every deviation row; `exe` is the conformance binary (for rows that need their own process).
pub fn rows(exe: Option<&Path>) -> Vec<Row> {
    let mut v = vec![
        Row {
            name: "nested_start",
            openssl: "ERR or bogus FINISH, outer job released, SIGSEGV when it returns",
            asyncjob: "Err(Nested); nothing changes; the outer job carries on",
            check: run_in_thread(nested_start),
        },
        Row {
            name: "nested_resume",
            openssl: "dispatcher context overwritten (UB)",
            asyncjob: "ResumeError { Nested } hands the job back; it resumes later",
            check: run_in_thread(nested_resume),
        },
        Row {
            name: "pause_without_wait_ctx",
            openssl: "resume of a job started with wctx NULL: SIGSEGV",
            asyncjob: "pauses and resumes normally",
            check: run_in_thread(pause_without_wait_ctx),
        },
        Row {
            name: "cleanup_thread_with_paused_jobs",
            openssl: "returns normally, paused jobs leak; resuming them is a use-after-free",
            asyncjob: "Err(JobsOutstanding{count}); the jobs stay valid and resume",
            check: run_in_thread(cleanup_with_paused_jobs),
        },
        Row {
            name: "drop_paused_job",
            openssl: "(no counterpart: a paused job can only leak)",
            asyncjob: "dropping Job unwinds it: destructors run, stack back to the pool",
            check: run_in_thread(drop_paused_job),
        },
        Row {
            name: "panic_in_job",
            openssl: "(no counterpart: C has no unwinding)",
            asyncjob: "panic re-raised in the caller of start/resume; pool stays usable",
            check: run_in_thread(panic_propagates),
        },
        Row {
            name: "wait_ctx_freed_under_paused_job",
            openssl: "ASYNC_WAIT_CTX_free while a job is paused: use-after-free on resume",
            asyncjob: "the paused job keeps the WaitCtx alive; cleanups run once, at the end",
            check: run_in_thread(wait_ctx_kept_alive),
        },
        Row {
            name: "init_thread_twice",
            openssl: "old pool and its idle jobs leak",
            asyncjob: "old idle jobs freed; new limits apply",
            check: run_in_thread(init_twice_frees_idle),
        },
        Row {
            name: "init_max_above_int_max",
            openssl: "3.0.19-3.5.x accept; 3.6+ reject with INVALID_POOL_SIZE",
            asyncjob: "rejected, as 3.6",
            check: run_in_thread(init_above_int_max),
        },
        Row {
            name: "stack_overflow",
            openssl: "more than 32 KB of stack: silent heap corruption",
            asyncjob: "guard page: the process ends with a message",
            check: match exe {
                Some(exe) => match stack_overflow(exe) {
                    Ok(()) => Check::Passed,
                    Err(e) => Check::Failed(e),
                },
                None => Check::NotApplicable("needs the conformance binary"),
            },
        },
        Row {
            name: "stale_handle",
            openssl: "finished handle passed back: FINISH with old ret, job double-pushed, later jobs aliased",
            asyncjob: "Job::resume consumes the handle; Job is not Clone/Copy",
            check: Check::PreventedByTypes("Job<R>: !Clone, resume(self) (compile-time assertion)"),
        },
        Row {
            name: "foreign_thread",
            openssl: "finish on another thread: SIGSEGV",
            asyncjob: "Job, JobId, WaitCtx, PauseBlock are !Send",
            check: Check::PreventedByTypes("!Send (compile-time assertion)"),
        },
        Row {
            name: "ret_null",
            openssl: "ret == NULL and the job finishes: SIGSEGV",
            asyncjob: "the result is a return value",
            check: Check::PreventedByTypes("no out-pointer in the API"),
        },
        Row {
            name: "null_wait_ctx_functions",
            openssl: "ASYNC_WAIT_CTX_*(NULL), ASYNC_get_wait_ctx(NULL): SIGSEGV",
            asyncjob: "methods take &WaitCtx / &Job",
            check: Check::PreventedByTypes("references cannot be NULL"),
        },
        Row {
            name: "args_non_null_size_zero",
            openssl: "3.0.19/3.5.5+/3.6: func(NULL); 3.0.0-3.0.18, 3.1: ERR+malloc failure; 3.2-3.5.4: ERR",
            asyncjob: "closures capture their data",
            check: Check::NotApplicable("no args/size pair in Rust"),
        },
    ];
    v.push(crate::memfns::row(exe));
    v
}

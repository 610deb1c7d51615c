//! `ASYNC_set_mem_functions` / `set_stack_allocator`: process-wide state, so every case runs in a
//! child process of its own (the conformance binary re-executed with `__child memfns-...`).

use crate::deviations::{Check, Row};
use std::path::Path;
use std::process::Command;

/// The cases, each run in its own process: (name, what the line must be on asyncjob).
pub const CASES: &[(&str, &str)] = &[
    // set before any stack works; the first job allocates one stack; then set is refused.
    ("first-job", "set=1 FINISH ret=5 allocs=1 set=0"),
    // pre-creating a job in init_thread(1,1) (with the default allocator) locks it too.
    ("precreate", "init=1 allocs=0 set=0"),
    // init_thread(0,0) allocates nothing, so set still works.
    ("init-zero", "init=1 set=1"),
];

/// Body of `__child memfns-asyncjob-<case>`.
pub fn asyncjob_child(case: &str) -> String {
    let set =
        || u8::from(asyncjob::set_stack_allocator(Box::new(crate::ffi::CountingStacks)).is_ok());
    match case {
        "first-job" => {
            let a = set();
            let r = match asyncjob::start(None, || 5) {
                Ok(asyncjob::Started::Finished(v)) => format!("FINISH ret={v}"),
                _ => "not finished".into(),
            };
            let n = crate::ffi::counting_stacks_allocated();
            format!("set={a} {r} allocs={n} set={}", set())
        }
        "precreate" => {
            let i = u8::from(asyncjob::init_thread(1, 1).is_ok());
            let n = crate::ffi::counting_stacks_allocated();
            format!("init={i} allocs={n} set={}", set())
        }
        "init-zero" => {
            let i = u8::from(asyncjob::init_thread(0, 0).is_ok());
            format!("init={i} set={}", set())
        }
        _ => format!("unknown case {case}"),
    }
}

fn run(exe: &Path, arg: &str) -> Result<String, String> {
    let out = Command::new(exe)
        .args(["__child", arg])
        .output()
        .map_err(|e| format!("cannot run child: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "child {arg} failed: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One diffed case: OpenSSL's line vs asyncjob's (None when the linked OpenSSL has no mem functions).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Diffed {
    pub case: &'static str,
    pub openssl: Option<String>,
    pub asyncjob: String,
}

/// Runs every case on both backends (OpenSSL only when it is 3.2+).
pub fn diff_all(exe: &Path) -> Vec<Diffed> {
    CASES
        .iter()
        .map(|(case, _)| {
            let asyncjob = run(exe, &format!("memfns-asyncjob-{case}")).unwrap_or_else(|e| e);
            let openssl = crate::ffi::HAS_MEM_FUNCTIONS
                .then(|| run(exe, &format!("memfns-openssl-{case}")).unwrap_or_else(|e| e));
            Diffed {
                case,
                openssl,
                asyncjob,
            }
        })
        .collect()
}

/// The deviation-table row: asyncjob alone against the documented lines.
pub fn row(exe: Option<&Path>) -> Row {
    let check = match exe {
        None => Check::NotApplicable("needs the conformance binary"),
        Some(exe) => {
            let mut bad = Vec::new();
            for (case, want) in CASES {
                match run(exe, &format!("memfns-asyncjob-{case}")) {
                    Ok(got) if got == *want => {}
                    Ok(got) => bad.push(format!("{case}: got `{got}`, want `{want}`")),
                    Err(e) => bad.push(e),
                }
            }
            if bad.is_empty() {
                Check::Passed
            } else {
                Check::Failed(bad.join("; "))
            }
        }
    };
    Row {
        name: "stack_allocator_lock",
        openssl: "[3.2+] set_mem_functions: 1 until the first stack is allocated anywhere, then 0 for ever; absent in 3.0",
        asyncjob: "set_stack_allocator: Ok until the first stack, then Err(AllocatorLocked); available on every version",
        check,
    }
}

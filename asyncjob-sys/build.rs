//! Builds the fiber shim: picks one backend from the target (`CARGO_CFG_*`, never `cfg!()`, which
//! would describe the build host), compiles it with `cc`, and with the `bindgen` feature regenerates
//! the bindings into `OUT_DIR` (the committed `src/bindings.rs` must equal them; see
//! `ci/check-bindings.sh`).

use std::env;
use std::path::PathBuf;

fn var(name: &str) -> String {
    env::var(name).unwrap_or_default()
}

fn main() {
    let arch = var("CARGO_CFG_TARGET_ARCH");
    let os = var("CARGO_CFG_TARGET_OS");
    let family = var("CARGO_CFG_TARGET_FAMILY");
    let pointer_width = var("CARGO_CFG_TARGET_POINTER_WIDTH");
    let unix = family.split(',').any(|f| f == "unix");
    let windows = os == "windows";
    let force_ucontext = env::var_os("CARGO_FEATURE_UCONTEXT").is_some();
    let sanitizers = env::var_os("CARGO_FEATURE_SANITIZERS").is_some();

    for path in ["build.rs", "csrc", "arch"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=ASYNCJOB_VALGRIND_INCLUDE");

    let mut build = cc::Build::new();
    build.include("csrc");
    build.flag_if_supported("-std=c11");
    build.warnings(true);

    let backend = if windows {
        if force_ucontext {
            println!(
                "cargo:warning=feature `ucontext` has no meaning on Windows; using Windows Fibers"
            );
        }
        build.file("csrc/fiber_windows.c");
        "windows-fibers"
    } else if unix {
        build.file("csrc/stack_posix.c");
        let asm = if force_ucontext || pointer_width != "64" {
            None
        } else {
            match arch.as_str() {
                "x86_64" => Some("arch/x86_64_sysv.S"),
                "aarch64" => Some("arch/aarch64_aapcs64.S"),
                _ => None,
            }
        };
        match asm {
            Some(file) => {
                build.file(file).file("csrc/fiber_asm.c");
                "asm"
            }
            None => {
                build.file("csrc/fiber_ucontext.c");
                "ucontext"
            }
        }
    } else {
        panic!("asyncjob-sys: no fiber backend for target os `{os}`, family `{family}`");
    };
    // musl has no getcontext/makecontext/swapcontext: fail here with the reason, not at link time
    // with undefined symbols in every program that uses the crate.
    if backend == "ucontext" && var("CARGO_CFG_TARGET_ENV") == "musl" {
        panic!(
            "asyncjob-sys: the `ucontext` backend cannot be built for musl (target arch \
             `{arch}`): musl libc has no getcontext/makecontext/swapcontext. On x86_64 and aarch64 \
             build without the `ucontext` feature (the asm backend is used); other musl targets \
             have no fiber backend."
        );
    }

    if sanitizers {
        build.define("ASYNCJOB_SANITIZERS", "1");
        // The ASan runtime comes from rustc (-Zsanitizer=address); the C code only calls its
        // fiber-switch annotations and need not be instrumented itself.
        let sanitize = var("CARGO_CFG_SANITIZE");
        if sanitize.split(',').any(|s| s == "address") {
            build.define("ASYNCJOB_ASAN", "1");
        }
        // Likewise TSan (-Zsanitizer=thread): fiber create/switch/destroy annotations.
        if sanitize.split(',').any(|s| s == "thread") {
            build.define("ASYNCJOB_TSAN", "1");
        }
    }
    // Every build (not only `sanitizers`) detects Valgrind at run time and registers fiber stacks
    // with it, when valgrind.h is there; natively that costs a few instructions. Without the header
    // the shim still sees Valgrind's preload library and uses mprotect guards under it, but cannot
    // register stacks (documented in csrc/asyncjob_fiber.h).
    if unix {
        match valgrind_include() {
            Some(dir) => {
                // A copy of the one header in a directory of its own: every compiler finds it,
                // cross compilers and zig too (they do not search the host's /usr/include), and no
                // other system header changes place on the include path.
                let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
                let only = out.join("valgrind-include");
                let copied = std::fs::create_dir_all(only.join("valgrind")).and_then(|()| {
                    std::fs::copy(
                        dir.join("valgrind/valgrind.h"),
                        only.join("valgrind/valgrind.h"),
                    )
                });
                match copied {
                    Ok(_) => {
                        build.include(&only);
                        build.define("ASYNCJOB_VALGRIND", "1");
                    }
                    Err(e) => println!(
                        "cargo:warning=cannot copy valgrind/valgrind.h from {}: {e}; fiber stacks \
                         are not registered with Valgrind",
                        dir.display()
                    ),
                }
            }
            None if sanitizers => println!(
                "cargo:warning=valgrind/valgrind.h not found (install valgrind or set \
                 ASYNCJOB_VALGRIND_INCLUDE): fiber stacks are not registered with Valgrind"
            ),
            None => {}
        }
    }

    println!("cargo:rerun-if-env-changed=DOCS_RS");
    // docs.rs documents every listed target from one Linux host without their C toolchains; the docs
    // need no native code.
    if env::var_os("DOCS_RS").is_none() {
        build.compile("asyncjob_fiber");
    }
    println!("cargo:backend={backend}");

    #[cfg(feature = "bindgen")]
    generate_bindings();
}

/// Directory that holds `valgrind/valgrind.h`, if any. The header is arch-neutral, so the host's copy
/// serves any target.
fn valgrind_include() -> Option<PathBuf> {
    env::var_os("ASYNCJOB_VALGRIND_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("/usr/include"),
            PathBuf::from("/usr/local/include"),
        ])
        .find(|dir| dir.join("valgrind/valgrind.h").is_file())
}

#[cfg(feature = "bindgen")]
fn generate_bindings() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let bindings = bindgen::Builder::default()
        .header("csrc/asyncjob_fiber.h")
        .allowlist_function("asyncjob_.*")
        .allowlist_type("asyncjob_.*")
        .allowlist_var("ASYNCJOB_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        // The header documents itself in plain C comments; make them the Rust docs.
        .clang_arg("-fparse-all-comments")
        .size_t_is_usize(true)
        .layout_tests(false)
        .use_core()
        .generate_comments(true)
        .generate()
        .expect("bindgen failed on csrc/asyncjob_fiber.h");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs into OUT_DIR");
}

//! Passes the linker version script to the cdylib link on ELF targets, so that libasyncjob.so exports
//! exactly the `ASYNC_*` entry points, under the version node that libcrypto's callers expect.
//!
//! It also links libasyncjob.so with `-z nodelete`: the first job stack installs a process-wide
//! SIGSEGV/SIGBUS handler (the stack-overflow reporter) that must stay mapped for the life of the
//! process, so `dlclose` must not unmap the library (tests/c/dlclose.c).

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let map = std::path::Path::new(&manifest).join("asyncjob.map");
    println!("cargo:rerun-if-changed={}", map.display());
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // The entry points written in assembly (src/entry.rs) exist for x86_64 Linux; elsewhere the
    // Rust functions of src/ffi.rs are exported themselves.
    println!("cargo:rustc-check-cfg=cfg(split_entry_points)");
    if arch == "x86_64" && os == "linux" {
        println!("cargo:rustc-cfg=split_entry_points");
    }
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    // ELF platforms with a GNU-compatible linker; Mach-O and PE use rustc's own export list.
    let elf = family == "unix"
        && !matches!(
            os.as_str(),
            "macos" | "ios" | "tvos" | "watchos" | "visionos"
        );
    if elf {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            map.display()
        );
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libasyncjob.so");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}

//! `libasyncjob`: OpenSSL's `ASYNC_*` C ABI (the twenty 3.0 functions plus the 3.2
//! `ASYNC_set_mem_functions` / `ASYNC_get_mem_functions` pair) as a thin face over the safe crate
//! `asyncjob`, which holds all the semantics.
//!
//! Build products: `libasyncjob.so` (exports only the `ASYNC_*` names, unversioned, so that it can
//! be `LD_PRELOAD`ed in front of libcrypto), `libasyncjob.a`, the header `include/asyncjob.h` and the
//! pkg-config file made by `install.sh`.
//!
//! When libcrypto is loaded in the process (found at run time with `dlsym`, never linked), the
//! library also does what OpenSSL's own implementation does with it: `OPENSSL_init_crypto` on the
//! same calls (so it fails the same way after `OPENSSL_cleanup`), errors on OpenSSL's error queue,
//! and a per-job default `OSSL_LIB_CTX`.
//!
//! `unsafe` code is in two modules: `ffi` (the pointers C hands us, the calls into libcrypto) and
//! `libctx` (the per-job default `OSSL_LIB_CTX`, which reads libcrypto's thread default). `ffi`
//! uses `libctx` and `state`, which know nothing of it.

#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(split_entry_points)]
mod entry;
mod ffi;
mod libctx;
mod state;

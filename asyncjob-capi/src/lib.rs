//! The C face of asyncjob: OpenSSL's `ASYNC_*` ABI over the safe crate (work in progress).

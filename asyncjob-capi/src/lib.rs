//! The C face of asyncjob (work in progress).

//! asyncjob (work in progress).

//! The hot paths of the job API: pause->resume round trip, and start->finish with and without a
//! captured 16-byte value. The side-by-side ratios against OpenSSL are in the conformance report.

use std::hint::black_box;

use asyncjob::{Resumed, Started};
use criterion::{Criterion, criterion_group, criterion_main};

fn pause_resume(c: &mut Criterion) {
    asyncjob::init_thread(8, 8).unwrap();
    // One long-lived job that pauses for ever; each iteration is one resume plus one pause.
    let mut job = match asyncjob::start(None, || {
        loop {
            asyncjob::pause();
        }
    }) {
        Ok(Started::Paused(job)) => Some(job),
        _ => unreachable!(),
    };
    c.bench_function("pause_resume_round_trip", |b| {
        b.iter(|| {
            let j = job.take().unwrap();
            match j.resume() {
                Ok(Resumed::Paused(j)) => job = Some(j),
                _ => unreachable!(),
            }
        })
    });
    drop(job);
}

fn start_finish(c: &mut Criterion) {
    asyncjob::init_thread(8, 8).unwrap();
    c.bench_function("start_finish_no_pause", |b| {
        b.iter(|| match asyncjob::start(None, || black_box(1u32)) {
            Ok(Started::Finished(v)) => v,
            _ => unreachable!(),
        })
    });
    let args = [7u8; 16];
    c.bench_function("start_finish_16_byte_capture", |b| {
        b.iter(|| {
            let a = black_box(args);
            match asyncjob::start(None, move || u32::from(a[0]) + u32::from(a[15])) {
                Ok(Started::Finished(v)) => v,
                _ => unreachable!(),
            }
        })
    });
}

criterion_group!(benches, pause_resume, start_finish);
criterion_main!(benches);

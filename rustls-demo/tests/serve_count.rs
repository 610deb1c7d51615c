//! `bench::serve_count`, what `rustls-demo instructions` runs under callgrind: it must serve at
//! least the N handshakes asked for and at most the C - 1 more that had started when the N-th
//! ended, with either loop variant, and fail no handshake (it asserts that itself).

use rustls_demo::bench::{Variant, serve_count};

#[test]
fn serves_n_handshakes_plus_at_most_the_ones_in_flight() {
    for variant in [Variant::JobFd, Variant::Blocking] {
        for (c, n) in [(1, 5), (4, 12)] {
            let served = serve_count(variant, c, n);
            assert!(
                (n..n + c as u64).contains(&served),
                "{variant:?}, C={c}, N={n}: served {served}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "one-thread loop variants")]
fn refuses_other_variants() {
    serve_count(Variant::JobNotify, 1, 1);
}

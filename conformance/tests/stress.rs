//! The soak checker (`conformance::stress`): a clean workload passes, and each kind of deliberate leak
//! is caught. Runs by rounds, not by time, so the outcome does not depend on the machine's speed. The
//! cases share the process's fd table and RSS, so they run one at a time.

use conformance::stress::{Config, Epoch, Leak, MAPS_SLACK, RSS_SLACK, Report, run};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn soak(leak: Option<Leak>, rounds: u64, epochs: u32) -> Report {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(&Config {
        threads: 2,
        epoch: Epoch::Rounds(rounds),
        warmup_epochs: 2,
        max_epochs: epochs,
        deadline: None,
        seed: 42,
        leak,
    })
}

#[test]
fn a_clean_workload_passes_and_exercises_every_pattern() {
    let r = soak(None, 150, 6);
    assert!(r.passed(), "{}", r.text());
    let c = &r.counts;
    assert_eq!(c.rounds, 2 * 150 * 6);
    assert!(c.jobs > 1000, "{}", r.text());
    for (what, n) in [
        ("finished", c.finished),
        ("cancelled", c.cancelled),
        ("panicked", c.panicked),
        ("no_jobs", c.no_jobs),
        ("pauses", c.pauses),
        ("fds registered", c.fds_registered),
        ("fds cleared", c.fds_cleared),
        ("pool re-inits", c.pool_reinits),
    ] {
        assert!(n > 0, "the workload never did {what}:\n{}", r.text());
    }
    assert_eq!(r.end.fds, r.start.fds);
}

#[test]
fn a_leaked_fd_per_round_is_caught() {
    let r = soak(Some(Leak::Fd), 10, 4);
    assert!(!r.passed());
    assert!(
        r.failures.iter().any(|f| f.contains("fds open")),
        "{}",
        r.text()
    );
}

#[test]
fn leaked_memory_is_caught() {
    // 256 KiB per round, 2 workers × 40 rounds per epoch: 20 MiB per epoch after the warm-up.
    let r = soak(Some(Leak::Memory), 40, 5);
    const { assert!(RSS_SLACK < (3 * 20) << 20) };
    assert!(!r.passed());
    assert!(r.failures.iter().any(|f| f.contains("RSS")), "{}", r.text());
}

#[test]
fn leaked_mappings_are_caught() {
    // One line per round, 2 workers × 20 rounds per epoch: 40 lines per epoch after the warm-up.
    let r = soak(Some(Leak::Map), 20, 5);
    const { assert!(MAPS_SLACK < 3 * 40) };
    assert!(!r.passed());
    assert!(
        r.failures.iter().any(|f| f.contains("memory maps")),
        "{}",
        r.text()
    );
}

#[test]
fn a_leaked_job_is_caught() {
    let r = soak(Some(Leak::Job), 20, 3);
    assert!(!r.passed());
    assert!(
        r.failures.iter().any(|f| f.contains("never dropped")),
        "{}",
        r.text()
    );
}

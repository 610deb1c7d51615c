//! The named scenarios: each pins down one row of the reference (openssl-behaviour.md), with the
//! line OpenSSL is expected to produce at each step (that is how the harness itself is validated),
//! and the OpenSSL versions for which asyncjob is expected to agree.

use crate::model::{Action, ArgSpec, CtxOp, Script, Step};
use serde::Serialize;

/// For which linked OpenSSL versions a scenario is diffed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Gate {
    /// All supported versions (3.0.19 and 3.6.x were observed to agree).
    Always,
    /// Only from this version number on; the text says what older versions do.
    Since(u64, &'static str),
    /// The behaviour has no counterpart in the Rust API; listed so the report shows the row.
    NotInRust(&'static str),
}

impl Gate {
    /// None when the scenario applies to `version`, else why it is skipped.
    pub fn skip_reason(self, version: u64) -> Option<String> {
        match self {
            Gate::Always => None,
            Gate::Since(v, why) if version < v => Some(format!(
                "needs OpenSSL >= {}.{}.{}: {why}",
                v >> 28,
                (v >> 20) & 0xff,
                (v >> 4) & 0xff
            )),
            Gate::Since(..) => None,
            Gate::NotInRust(why) => Some(format!("n/a in Rust: {why}")),
        }
    }
}

/// A named scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    /// The reference row it pins down.
    pub about: &'static str,
    pub steps: Vec<Step>,
    /// Per step, the line OpenSSL must produce (None: not checked).
    pub expect: Vec<Option<&'static str>>,
    pub gate: Gate,
}

struct B {
    s: Scenario,
}

impl B {
    fn st(&mut self, step: Step, expect: &'static str) -> &mut Self {
        self.s.steps.push(step);
        self.s.expect.push(Some(expect));
        self
    }
    fn init(&mut self, max: usize, init: usize, e: &'static str) -> &mut Self {
        self.st(Step::Init { max, init }, e)
    }
    fn ctx(&mut self, e: &'static str) -> &mut Self {
        self.st(Step::NewCtx, e)
    }
    fn start(
        &mut self,
        slot: usize,
        ctx: Option<usize>,
        script: Script,
        e: &'static str,
    ) -> &mut Self {
        self.st(
            Step::Start {
                slot,
                ctx,
                script,
                args: ArgSpec::None,
            },
            e,
        )
    }
    fn start_args(
        &mut self,
        slot: usize,
        ctx: Option<usize>,
        script: Script,
        args: ArgSpec,
        e: &'static str,
    ) -> &mut Self {
        self.st(
            Step::Start {
                slot,
                ctx,
                script,
                args,
            },
            e,
        )
    }
    fn resume(&mut self, slot: usize, e: &'static str) -> &mut Self {
        self.st(Step::Resume { slot, decoy: false }, e)
    }
    fn op(&mut self, ctx: usize, op: CtxOp, e: &'static str) -> &mut Self {
        self.st(Step::Ctx { ctx, op }, e)
    }
    fn free(&mut self, ctx: usize, e: &'static str) -> &mut Self {
        self.st(Step::FreeCtx(ctx), e)
    }
}

fn sc(name: &'static str, about: &'static str, gate: Gate, f: impl FnOnce(&mut B)) -> Scenario {
    let mut b = B {
        s: Scenario {
            name,
            about,
            steps: Vec::new(),
            expect: Vec::new(),
            gate,
        },
    };
    f(&mut b);
    b.s
}

use Action::{Block, CurrentJob, CurrentWaitCtx, Pause, ReadArgs, Unblock};
use CtxOp::{AllFds, ChangedFds, GetCallback, GetStatus};

fn s(ret: i32, a: impl Into<Vec<Action>>) -> Script {
    Script::new(ret, a)
}
fn set(key: u8, fd: i32, cleanup: bool) -> CtxOp {
    CtxOp::SetWaitFd {
        key,
        fd,
        data: key,
        cleanup,
    }
}
fn clear(key: u8) -> CtxOp {
    CtxOp::ClearFd { key }
}
fn get(key: u8) -> CtxOp {
    CtxOp::GetFd { key }
}
fn act(op: CtxOp) -> Action {
    Action::Ctx(op)
}

/// `INT_MAX + 1` as a pool size.
const ABOVE_INT_MAX: usize = i32::MAX as usize + 1;

/// Every named scenario, in report order.
pub fn all() -> Vec<Scenario> {
    use Gate::Always;
    let mut v = vec![
        sc("is_capable", "2.1 POSIX build returns 1", Always, |b| {
            b.st(Step::IsCapable, "capable=1");
        }),
        sc(
            "finish_without_pause_sets_ret_clears_job",
            "2.4 normal start, FINISH, *ret set, *job NULL",
            Always,
            |b| {
                b.start(0, None, s(77, []), "FINISH ret=77 job=-");
            },
        ),
        sc(
            "auto_init_unlimited_pool",
            "2.2 first start auto-inits (0,0): unlimited",
            Always,
            |b| {
                b.ctx("ctx=C0");
                for (i, e) in [
                    "PAUSE ret=-1 job=J0",
                    "PAUSE ret=-1 job=J1",
                    "PAUSE ret=-1 job=J2",
                    "PAUSE ret=-1 job=J3",
                ]
                .into_iter()
                .enumerate()
                {
                    b.start(i, Some(0), s(10 + i as i32, [Pause]), e);
                }
                b.resume(2, "pause=1 FINISH ret=12 job=-");
            },
        ),
        sc(
            "unlimited_pool_many_paused",
            "2.4 max_size=0: many jobs paused at once",
            Always,
            |b| {
                b.ctx("ctx=C0");
                for i in 0..64 {
                    b.st(
                        Step::Start {
                            slot: i,
                            ctx: Some(0),
                            script: s(1, [Pause]),
                            args: ArgSpec::None,
                        },
                        "",
                    );
                    b.s.expect.pop();
                    b.s.expect.push(None);
                }
                b.start(64, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J64");
            },
        ),
        sc(
            "lifo_pool_reuse",
            "1/2.4 pool is a LIFO stack: last finished job is the next one started",
            Always,
            |b| {
                b.init(2, 0, "init=1").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(1, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J1");
                b.resume(1, "pause=1 FINISH ret=2 job=-");
                b.resume(0, "pause=1 FINISH ret=1 job=-");
                b.start(
                    0,
                    Some(0),
                    s(3, [CurrentJob, Pause]),
                    "cur=J0 PAUSE ret=-1 job=J0",
                );
                b.start(
                    1,
                    Some(0),
                    s(4, [CurrentJob, Pause]),
                    "cur=J1 PAUSE ret=-1 job=J1",
                );
            },
        ),
        sc(
            "finished_job_reused_by_next_start",
            "2.4 retry gets the same job object",
            Always,
            |b| {
                b.start(0, None, s(1, [CurrentJob]), "cur=J0 FINISH ret=1 job=-");
                b.start(0, None, s(2, [CurrentJob]), "cur=J0 FINISH ret=2 job=-");
            },
        ),
        sc(
            "no_jobs_at_max",
            "2.4 pool exhausted: NO_JOBS, *job/*ret untouched; retry reuses",
            Always,
            |b| {
                b.init(3, 3, "init=1").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(1, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J1");
                b.start(2, Some(0), s(3, [Pause]), "PAUSE ret=-1 job=J2");
                b.start(3, Some(0), s(4, [Pause]), "NO_JOBS ret=-1 job=-");
                b.resume(1, "pause=1 FINISH ret=2 job=-");
                b.start(3, Some(0), s(5, [Pause]), "PAUSE ret=-1 job=J1");
            },
        ),
        sc(
            "ret_untouched_on_pause_and_no_jobs",
            "2.4 *ret written only on FINISH",
            Always,
            |b| {
                b.init(1, 0, "init=1").ctx("ctx=C0");
                b.start(0, Some(0), s(9, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(1, Some(0), s(8, []), "NO_JOBS ret=-1 job=-");
                b.resume(0, "pause=1 FINISH ret=9 job=-");
            },
        ),
        sc(
            "init_zero_max_with_init_rejected",
            "2.2 (0, n>0) is rejected with INVALID_POOL_SIZE",
            Always,
            |b| {
                b.init(0, 1, "init=0 err=51:103");
                b.start(0, None, s(1, []), "FINISH ret=1 job=-");
            },
        ),
        sc(
            "init_init_above_max_rejected",
            "2.2 init_size > max_size rejected",
            Always,
            |b| {
                b.init(1, 2, "init=0 err=51:103");
            },
        ),
        sc("init_zero_zero_ok", "2.2 (0,0) accepted", Always, |b| {
            b.init(0, 0, "init=1");
        }),
        sc(
            "init_limits_apply",
            "2.2 a valid init sets the max",
            Always,
            |b| {
                b.init(1, 1, "init=1").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(1, Some(0), s(2, [Pause]), "NO_JOBS ret=-1 job=-");
            },
        ),
        sc(
            "init_twice_replaces_pool",
            "2.2 (2,2) then (3,1): new limits (3x PAUSE then NO_JOBS)",
            Always,
            |b| {
                b.init(2, 2, "init=1").init(3, 1, "init=1").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(1, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J1");
                b.start(2, Some(0), s(3, [Pause]), "PAUSE ret=-1 job=J2");
                b.start(3, Some(0), s(4, [Pause]), "NO_JOBS ret=-1 job=-");
            },
        ),
        sc(
            "init_while_outstanding",
            "2.2 re-init with a paused job: it joins the new pool uncounted",
            Always,
            |b| {
                b.init(1, 0, "init=1").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.init(1, 0, "init=1");
                b.start(1, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J1");
                b.resume(0, "pause=1 FINISH ret=1 job=-");
                b.resume(1, "pause=1 FINISH ret=2 job=-");
                b.start(0, Some(0), s(3, [Pause]), "PAUSE ret=-1 job=J1");
                b.start(1, Some(0), s(4, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(2, Some(0), s(5, [Pause]), "NO_JOBS ret=-1 job=-");
            },
        ),
        sc(
            "cleanup_thread_twice_is_noop",
            "2.3 nothing initialised / twice: no-op",
            Always,
            |b| {
                b.st(Step::Cleanup, "").st(Step::Cleanup, "");
                b.start(0, None, s(3, []), "FINISH ret=3 job=-");
            },
        ),
        sc(
            "cleanup_then_auto_init_unlimited",
            "2.3 cleanup frees the pool; next start auto-inits (0,0)",
            Always,
            |b| {
                b.init(1, 1, "init=1").st(Step::Cleanup, "").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.start(1, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J1");
            },
        ),
        sc(
            "pause_handle_equals_current_job",
            "2.4/2.6 *job on PAUSE == get_current_job inside",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(5, [CurrentJob, Pause, CurrentJob]),
                    "cur=J0 PAUSE ret=-1 job=J0",
                );
                b.resume(0, "pause=1 cur=J0 FINISH ret=5 job=-");
            },
        ),
        sc(
            "repause_returns_same_handle",
            "2.4 a resumed job that pauses again gives the same handle",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(0, Some(0), s(6, [Pause, Pause]), "PAUSE ret=-1 job=J0");
                b.resume(0, "pause=1 PAUSE ret=-1 job=J0");
                b.resume(0, "pause=1 FINISH ret=6 job=-");
            },
        ),
        sc(
            "current_job_outside_is_null",
            "2.6 NULL outside a job, even while jobs are paused",
            Always,
            |b| {
                b.st(Step::CurrentJobOutside, "cur=-").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.st(Step::CurrentJobOutside, "cur=-");
            },
        ),
        sc(
            "pause_outside_returns_1",
            "2.5 outside a job: returns 1, does nothing",
            Always,
            |b| {
                b.st(Step::PauseOutside, "pause=1");
            },
        ),
        sc(
            "resume_ignores_func_args_ctx",
            "2.4 resume: func/args/size/wctx ignored",
            Always,
            |b| {
                b.ctx("ctx=C0").ctx("ctx=C1");
                b.start(
                    0,
                    Some(0),
                    s(5, [Pause, CurrentWaitCtx]),
                    "PAUSE ret=-1 job=J0",
                );
                b.st(
                    Step::Resume {
                        slot: 0,
                        decoy: true,
                    },
                    "pause=1 wctx=C0 FINISH ret=5 job=-",
                );
            },
        ),
        sc(
            "get_wait_ctx_of_paused_job",
            "2.7 returns the wctx given at first start",
            Always,
            |b| {
                b.ctx("ctx=C0").ctx("ctx=C1");
                b.start(0, Some(1), s(5, [Pause]), "PAUSE ret=-1 job=J0");
                b.st(Step::JobWaitCtx { slot: 0 }, "wctx=C1");
            },
        ),
        sc(
            "wait_ctx_null_inside_job_without_ctx",
            "2.7 wctx NULL allowed if the job never pauses",
            Always,
            |b| {
                b.start(0, None, s(4, [CurrentWaitCtx]), "wctx=- FINISH ret=4 job=-");
            },
        ),
        sc(
            "args_copied_at_start",
            "2.4 args copied; caller may overwrite the original at once",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start_args(
                    0,
                    Some(0),
                    s(1, [Pause, ReadArgs]),
                    ArgSpec::Bytes(vec![42, 0, 0, 0]),
                    "PAUSE ret=-1 job=J0",
                );
                b.st(Step::ClobberArgs, "");
                b.resume(0, "pause=1 args=2a000000 FINISH ret=1 job=-");
            },
        ),
        sc(
            "args_16_bytes",
            "2.4 func receives a copy of size bytes",
            Always,
            |b| {
                b.start_args(
                    0,
                    None,
                    s(1, [ReadArgs]),
                    ArgSpec::Bytes((0..16).collect()),
                    "args=000102030405060708090a0b0c0d0e0f FINISH ret=1 job=-",
                );
            },
        ),
        sc(
            "args_null_with_size_gives_null",
            "2.4 args NULL, size > 0: func(NULL)",
            Always,
            |b| {
                b.start_args(
                    0,
                    None,
                    s(1, [ReadArgs]),
                    ArgSpec::NullWithSize(16),
                    "args=NULL FINISH ret=1 job=-",
                );
            },
        ),
        sc(
            "args_none",
            "2.4 args NULL, size 0: func(NULL)",
            Always,
            |b| {
                b.start(0, None, s(1, [ReadArgs]), "args=NULL FINISH ret=1 job=-");
            },
        ),
        sc(
            "new_ctx_defaults",
            "2.10/2.12 new ctx: no fds, counts 0, no callback, status 0",
            Always,
            |b| {
                b.ctx("ctx=C0")
                    .op(0, AllFds, "all=[]")
                    .op(0, ChangedFds, "add=0[]/del=0[]");
                b.op(0, GetCallback, "cb=-").op(0, GetStatus, "status=0");
            },
        ),
        sc(
            "all_fds_newest_first",
            "2.11 set_wait_fd prepends; lists are newest first",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, false), "set_fd=1").op(
                    0,
                    set(2, 11, false),
                    "set_fd=1",
                );
                b.op(0, set(3, 12, false), "set_fd=1")
                    .op(0, AllFds, "all=[12,11,10]");
                b.op(0, ChangedFds, "add=3[12,11,10]/del=0[]");
            },
        ),
        sc(
            "get_fd_returns_fd_and_data",
            "2.11 get_fd: newest non-deleted node",
            Always,
            |b| {
                b.ctx("ctx=C0").op(
                    0,
                    CtxOp::SetWaitFd {
                        key: 2,
                        fd: 20,
                        data: 9,
                        cleanup: false,
                    },
                    "set_fd=1",
                );
                b.op(0, get(2), "fd=20/9").op(0, get(7), "fd=-");
            },
        ),
        sc(
            "duplicate_keys_two_nodes",
            "2.11 no duplicate check; get/clear hit the newest",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(5, 14, true), "set_fd=1").op(
                    0,
                    set(5, 15, true),
                    "set_fd=1",
                );
                b.op(0, AllFds, "all=[15,14]").op(0, get(5), "fd=15/5");
                b.op(0, clear(5), "clear=1")
                    .op(0, AllFds, "all=[14]")
                    .op(0, get(5), "fd=14/5");
                b.free(0, "cleanup(C0,k5,14,5)");
            },
        ),
        sc(
            "duplicate_key_cleared_in_earlier_round",
            "2.11 clear of a duplicate from an earlier round marks the newest",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(5, 14, true), "set_fd=1").op(
                    0,
                    set(5, 15, true),
                    "set_fd=1",
                );
                b.start(
                    0,
                    Some(0),
                    s(1, [Pause, act(clear(5)), act(ChangedFds), act(AllFds)]),
                    "PAUSE ret=-1 job=J0",
                );
                b.resume(
                    0,
                    "pause=1 clear=1 add=0[]/del=1[15] all=[14] FINISH ret=1 job=-",
                );
                b.free(0, "cleanup(C0,k5,14,5)");
            },
        ),
        sc(
            "clear_fd_same_round_unlinks_without_cleanup",
            "2.11 clear in the same round: freed at once, numadd--, no cleanup",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, true), "set_fd=1").op(
                    0,
                    set(3, 12, true),
                    "set_fd=1",
                );
                b.op(0, clear(3), "clear=1").op(0, AllFds, "all=[10]").op(
                    0,
                    ChangedFds,
                    "add=1[10]/del=0[]",
                );
                b.free(0, "cleanup(C0,k1,10,1)");
            },
        ),
        sc(
            "clear_fd_earlier_round_marks_deleted",
            "2.11 clear from an earlier round: del list, no get/all, skipped at free",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, true), "set_fd=1");
                b.start(
                    0,
                    Some(0),
                    s(
                        1,
                        [
                            Pause,
                            act(clear(1)),
                            act(ChangedFds),
                            act(AllFds),
                            act(get(1)),
                        ],
                    ),
                    "PAUSE ret=-1 job=J0",
                );
                b.resume(
                    0,
                    "pause=1 clear=1 add=0[]/del=1[10] all=[] fd=- FINISH ret=1 job=-",
                );
                b.op(0, ChangedFds, "add=0[]/del=1[10]")
                    .op(0, clear(1), "clear=0");
                b.free(0, "");
            },
        ),
        sc(
            "deleted_node_dropped_at_next_reset_without_cleanup",
            "2.11 reset frees del nodes without cleanup",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, true), "set_fd=1");
                b.start(
                    0,
                    Some(0),
                    s(1, [Pause, act(clear(1)), Pause, act(ChangedFds)]),
                    "PAUSE ret=-1 job=J0",
                );
                b.resume(0, "pause=1 clear=1 PAUSE ret=-1 job=J0");
                b.resume(0, "pause=1 add=0[]/del=0[] FINISH ret=1 job=-");
                b.free(0, "");
            },
        ),
        sc(
            "clear_unknown_key_returns_0",
            "2.11 clear_fd on an unknown key: 0",
            Always,
            |b| {
                b.ctx("ctx=C0")
                    .op(0, clear(9), "clear=0")
                    .op(0, set(1, 10, false), "set_fd=1")
                    .op(0, clear(2), "clear=0");
            },
        ),
        sc(
            "cleanup_order_at_free",
            "2.10 free: cleanups newest first, skipping cleared / no-cleanup nodes",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, true), "set_fd=1").op(
                    0,
                    set(2, 11, true),
                    "set_fd=1",
                );
                b.op(0, set(3, 12, false), "set_fd=1")
                    .op(0, set(4, 13, true), "set_fd=1")
                    .op(0, clear(2), "clear=1");
                b.free(0, "cleanup(C0,k4,13,4) cleanup(C0,k1,10,1)");
            },
        ),
        sc(
            "changed_fds_repeatable",
            "2.11 get_changed_fds resets nothing",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, false), "set_fd=1");
                b.op(0, ChangedFds, "add=1[10]/del=0[]")
                    .op(0, ChangedFds, "add=1[10]/del=0[]");
            },
        ),
        sc(
            "counters_not_reset_at_start_pause_or_finish",
            "2.11 no reset at first start, at pause, at FINISH",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, false), "set_fd=1");
                b.start(
                    0,
                    Some(0),
                    s(1, [act(set(2, 11, false))]),
                    "set_fd=1 FINISH ret=1 job=-",
                );
                b.op(0, ChangedFds, "add=2[11,10]/del=0[]");
                b.start(
                    0,
                    Some(0),
                    s(2, [act(ChangedFds), Pause, act(ChangedFds)]),
                    "add=2[11,10]/del=0[] PAUSE ret=-1 job=J0",
                );
                b.op(0, ChangedFds, "add=2[11,10]/del=0[]");
                b.resume(0, "pause=1 add=0[]/del=0[] FINISH ret=2 job=-");
                b.op(0, ChangedFds, "add=0[]/del=0[]")
                    .op(0, AllFds, "all=[11,10]");
            },
        ),
        sc(
            "counters_reset_only_for_jobs_using_the_ctx",
            "2.11 resuming a job on another ctx does not reset this one",
            Always,
            |b| {
                b.ctx("ctx=C0")
                    .ctx("ctx=C1")
                    .op(0, set(1, 10, false), "set_fd=1");
                b.start(0, Some(1), s(1, [Pause]), "PAUSE ret=-1 job=J0");
                b.resume(0, "pause=1 FINISH ret=1 job=-");
                b.op(0, ChangedFds, "add=1[10]/del=0[]");
            },
        ),
        sc(
            "adds_inside_job_counted_until_resume",
            "2.11 adds inside a job show as added to the caller",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(
                        1,
                        [
                            act(set(1, 10, true)),
                            Pause,
                            act(ChangedFds),
                            act(set(2, 11, true)),
                            Pause,
                        ],
                    ),
                    "set_fd=1 PAUSE ret=-1 job=J0",
                );
                b.op(0, ChangedFds, "add=1[10]/del=0[]");
                b.resume(0, "pause=1 add=0[]/del=0[] set_fd=1 PAUSE ret=-1 job=J0");
                b.op(0, ChangedFds, "add=1[11]/del=0[]")
                    .op(0, AllFds, "all=[11,10]");
            },
        ),
        sc(
            "fd_cleanup_receives_ctx_key_fd_data",
            "2.10 cleanup(ctx, key, fd, custom_data)",
            Always,
            |b| {
                b.ctx("ctx=C0").ctx("ctx=C1").op(
                    1,
                    CtxOp::SetWaitFd {
                        key: 2,
                        fd: 20,
                        data: 9,
                        cleanup: true,
                    },
                    "set_fd=1",
                );
                b.free(1, "cleanup(C1,k2,20,9)");
            },
        ),
        sc(
            "free_ctx_after_job_finished",
            "2.10 a ctx whose job finished can be freed",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(1, [act(set(3, 30, true)), Pause]),
                    "set_fd=1 PAUSE ret=-1 job=J0",
                );
                b.resume(0, "pause=1 FINISH ret=1 job=-");
                b.free(0, "cleanup(C0,k3,30,3)");
            },
        ),
        sc(
            "wait_ctx_shared_by_two_jobs",
            "2.11 two jobs on one ctx: one fd list, resume of either resets",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(1, [act(set(1, 10, false)), Pause, act(AllFds)]),
                    "set_fd=1 PAUSE ret=-1 job=J0",
                );
                b.start(
                    1,
                    Some(0),
                    s(2, [act(set(2, 11, false)), Pause, act(ChangedFds)]),
                    "set_fd=1 PAUSE ret=-1 job=J1",
                );
                b.op(0, ChangedFds, "add=2[11,10]/del=0[]");
                b.resume(1, "pause=1 add=0[]/del=0[] FINISH ret=2 job=-");
                b.resume(0, "pause=1 all=[11,10] FINISH ret=1 job=-");
            },
        ),
        sc(
            "block_outside_ignored",
            "2.8 block twice outside, then a job still pauses",
            Always,
            |b| {
                b.st(Step::Block, "").st(Step::Block, "").ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause]), "PAUSE ret=-1 job=J0");
            },
        ),
        sc(
            "unblock_underflow_stays_zero",
            "2.8 unblock at 0 stays 0 (inside and outside)",
            Always,
            |b| {
                b.st(Step::Unblock, "").ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(1, [Unblock, Unblock, Pause]),
                    "PAUSE ret=-1 job=J0",
                );
            },
        ),
        sc(
            "block_inside_prevents_pause",
            "2.5 blocked > 0: pause returns 1 without pausing",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(1, [Block, Pause, Unblock, Pause]),
                    "pause=1 PAUSE ret=-1 job=J0",
                );
                b.resume(0, "pause=1 FINISH ret=1 job=-");
            },
        ),
        sc(
            "block_nesting_counts",
            "2.8 block, block, unblock, pause: no pause",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(1, [Block, Block, Unblock, Pause, Unblock, Pause]),
                    "pause=1 PAUSE ret=-1 job=J0",
                );
                b.resume(0, "pause=1 FINISH ret=1 job=-");
            },
        ),
        sc(
            "block_counter_leaks_into_later_jobs",
            "2.8 counter is per thread; outside unblock cannot clear it",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Block]), "FINISH ret=1 job=-");
                b.start(0, Some(0), s(2, [Pause]), "pause=1 FINISH ret=2 job=-");
                b.st(Step::Unblock, "");
                b.start(0, Some(0), s(3, [Pause]), "pause=1 FINISH ret=3 job=-");
                b.start(0, Some(0), s(4, [Unblock, Pause]), "PAUSE ret=-1 job=J0");
            },
        ),
        sc(
            "block_counter_shared_by_paused_jobs",
            "2.8 a block taken in one job affects another",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Pause, Block]), "PAUSE ret=-1 job=J0");
                b.start(
                    1,
                    Some(0),
                    s(2, [Pause, Pause, Unblock]),
                    "PAUSE ret=-1 job=J1",
                );
                b.resume(0, "pause=1 FINISH ret=1 job=-");
                b.resume(1, "pause=1 pause=1 FINISH ret=2 job=-");
            },
        ),
        sc(
            "cleanup_thread_resets_block_counter",
            "2.3/2.8 cleanup_thread clears the leaked block",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(0, Some(0), s(1, [Block]), "FINISH ret=1 job=-");
                b.st(Step::Cleanup, "");
                b.start(0, Some(0), s(2, [Pause]), "PAUSE ret=-1 job=J0");
            },
        ),
        sc(
            "blocked_pause_does_not_reset_counts",
            "2.5 a blocked pause does not reset wait-ctx counts",
            Always,
            |b| {
                b.ctx("ctx=C0").op(0, set(1, 10, false), "set_fd=1");
                b.start(
                    0,
                    Some(0),
                    s(1, [Block, Pause, Unblock, act(ChangedFds)]),
                    "pause=1 add=1[10]/del=0[] FINISH ret=1 job=-",
                );
            },
        ),
        sc(
            "callback_round_trip",
            "2.12 set_callback(fn, arg) then get_callback returns both",
            Always,
            |b| {
                b.ctx("ctx=C0")
                    .op(
                        0,
                        CtxOp::SetCallback {
                            cb: Some(0),
                            arg: 7,
                        },
                        "set_cb=1",
                    )
                    .op(0, GetCallback, "cb=1007");
                b.op(
                    0,
                    CtxOp::SetCallback {
                        cb: Some(1),
                        arg: 8,
                    },
                    "set_cb=1",
                )
                .op(0, GetCallback, "cb=2008");
            },
        ),
        sc(
            "set_callback_null_fn",
            "2.12 set_callback(ctx, NULL, arg): 1, then get_callback 0",
            Always,
            |b| {
                b.ctx("ctx=C0").op(
                    0,
                    CtxOp::SetCallback {
                        cb: Some(0),
                        arg: 7,
                    },
                    "set_cb=1",
                );
                b.op(0, CtxOp::SetCallback { cb: None, arg: 5 }, "set_cb=1")
                    .op(0, GetCallback, "cb=-");
            },
        ),
        sc(
            "set_callback_null_arg",
            "2.12 set_callback(ctx, fn, NULL): get_callback 1 with arg NULL",
            Always,
            |b| {
                b.ctx("ctx=C0")
                    .op(
                        0,
                        CtxOp::SetCallback {
                            cb: Some(1),
                            arg: 0,
                        },
                        "set_cb=1",
                    )
                    .op(0, GetCallback, "cb=2000");
            },
        ),
        sc(
            "status_round_trip_any_int",
            "2.12 set_status takes any int",
            Always,
            |b| {
                b.ctx("ctx=C0")
                    .op(0, CtxOp::SetStatus(42), "set_status=1")
                    .op(0, GetStatus, "status=42");
                b.op(0, CtxOp::SetStatus(-7), "set_status=1")
                    .op(0, GetStatus, "status=-7");
            },
        ),
        sc(
            "status_and_callback_set_inside_job",
            "2.12 a job sets status/callback on its own ctx",
            Always,
            |b| {
                b.ctx("ctx=C0");
                b.start(
                    0,
                    Some(0),
                    s(
                        1,
                        [
                            act(CtxOp::SetStatus(3)),
                            act(CtxOp::SetCallback {
                                cb: Some(0),
                                arg: 4,
                            }),
                            Pause,
                            act(GetStatus),
                        ],
                    ),
                    "set_status=1 set_cb=1 PAUSE ret=-1 job=J0",
                );
                b.op(0, GetStatus, "status=3")
                    .op(0, GetCallback, "cb=1004")
                    .op(0, CtxOp::SetStatus(2), "set_status=1");
                b.resume(0, "pause=1 status=2 FINISH ret=1 job=-");
            },
        ),
    ];
    v.push(sc(
        "args_non_null_size_zero",
        "2.4/9 args != NULL, size == 0: 3.0.19/3.5.5+/3.6 run func(NULL); 3.0.0-3.0.18/3.1 ERR + malloc failure; 3.2-3.5.4 ERR",
        Gate::NotInRust("a closure captures its data; there is no (args, size) pair"),
        |b| {
            b.start_args(0, None, s(1, [ReadArgs]), ArgSpec::Bytes(Vec::new()), "args=NULL FINISH ret=1 job=-");
        },
    ));
    v.push(sc(
        "init_max_above_int_max_rejected",
        "2.2/9 max_size > INT_MAX: asyncjob follows 3.6 (rejects)",
        Gate::Since(0x3060_0000, "3.0.19..3.5.x accept max_size > INT_MAX"),
        |b| {
            b.init(ABOVE_INT_MAX, 0, "init=0 err=51:103");
            b.init(usize::MAX, 0, "init=0 err=51:103");
        },
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_skip_by_version() {
        let g = Gate::Since(0x3060_0000, "older accept");
        assert!(
            g.skip_reason(0x3000_0130)
                .is_some_and(|r| r.contains("3.6.0"))
        );
        assert_eq!(g.skip_reason(0x3060_0030), None);
        assert_eq!(Gate::Always.skip_reason(0), None);
        assert!(Gate::NotInRust("x").skip_reason(0x3060_0030).is_some());
    }

    #[test]
    fn every_step_has_an_expectation_slot() {
        for s in all() {
            assert_eq!(s.steps.len(), s.expect.len(), "{}", s.name);
            assert!(
                s.expect.iter().flatten().count() > 0,
                "{} checks nothing",
                s.name
            );
        }
    }
}

//! Byte strings as scenario programs, for coverage-guided fuzzing (`conformance/fuzz`): every byte
//! string decodes, deterministically, to a program inside OpenSSL's defined behaviour (the same
//! space [`crate::programs::program`] generates from), and [`to_bytes`] encodes a program back, so
//! that a seed corpus can be made from the named scenarios and from generated programs.
//!
//! The format is a flat sequence of steps. Each step is one tag byte (taken modulo the sum of the
//! weights below, so every byte value means some step) followed by its field bytes. Input that ends
//! inside a step reads as zero bytes; input that ends at a step boundary ends the program. Steps past
//! [`MAX_STEPS`] are ignored. Field bytes are reduced into range (modulo), never rejected, so a
//! mutation of one byte changes one value.

use crate::model::{Action, ArgSpec, CtxOp, Script, Step};
use crate::programs::sanitize;

/// Longest program decoded (the generator's longest is 33 steps).
pub const MAX_STEPS: usize = 64;
/// Slots for paused jobs.
pub const SLOTS: u8 = 5;
/// Distinct fd keys.
pub const KEYS: u8 = 4;
/// Most actions in one job script.
pub const MAX_ACTIONS: u8 = 6;
/// Longest args buffer copied at start.
pub const MAX_ARGS: u8 = 16;
/// `ASYNC_init_thread` sizes: `max < MAX_POOL`, `init < MAX_INIT` (never above `INT_MAX`, where 3.0
/// and 3.6 differ).
pub const MAX_POOL: u8 = 7;
pub const MAX_INIT: u8 = 5;
/// Driver wait-ctx indices are below this (4 often names a context that does not exist yet).
pub const CTX_INDICES: usize = 4;

/// Step kinds with their weights (how many tag values select them).
const STEP_WEIGHTS: &[(StepKind, u8)] = &[
    (StepKind::Init, 2),
    (StepKind::Cleanup, 1),
    (StepKind::NewCtx, 3),
    (StepKind::FreeCtx, 1),
    (StepKind::Start, 10),
    (StepKind::Resume, 8),
    (StepKind::Ctx, 6),
    (StepKind::Block, 1),
    (StepKind::Unblock, 1),
    (StepKind::PauseOutside, 1),
    (StepKind::CurrentJobOutside, 1),
    (StepKind::JobWaitCtx, 1),
    (StepKind::IsCapable, 1),
    (StepKind::ClobberArgs, 1),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StepKind {
    Init,
    Cleanup,
    NewCtx,
    FreeCtx,
    Start,
    Resume,
    Ctx,
    Block,
    Unblock,
    PauseOutside,
    CurrentJobOutside,
    JobWaitCtx,
    IsCapable,
    ClobberArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ActionKind {
    Pause,
    Block,
    Unblock,
    CurrentJob,
    CurrentWaitCtx,
    Ctx,
    ReadArgs,
}

const ACTION_WEIGHTS: &[(ActionKind, u8)] = &[
    (ActionKind::Pause, 5),
    (ActionKind::Block, 1),
    (ActionKind::Unblock, 2),
    (ActionKind::CurrentJob, 1),
    (ActionKind::CurrentWaitCtx, 1),
    (ActionKind::Ctx, 4),
    (ActionKind::ReadArgs, 1),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OpKind {
    SetWaitFd,
    GetFd,
    AllFds,
    ChangedFds,
    ClearFd,
    SetStatus,
    GetStatus,
    SetCallback,
    GetCallback,
}

const OP_WEIGHTS: &[(OpKind, u8)] = &[
    (OpKind::SetWaitFd, 4),
    (OpKind::GetFd, 1),
    (OpKind::AllFds, 2),
    (OpKind::ChangedFds, 3),
    (OpKind::ClearFd, 3),
    (OpKind::SetStatus, 1),
    (OpKind::GetStatus, 1),
    (OpKind::SetCallback, 1),
    (OpKind::GetCallback, 1),
];

/// Picks the kind a tag byte selects: `tag % total weight`, then the cumulative ranges in order.
fn pick<K: Copy>(table: &[(K, u8)], tag: u8) -> K {
    let total: u32 = table.iter().map(|&(_, w)| u32::from(w)).sum();
    let mut t = u32::from(tag) % total;
    for &(k, w) in table {
        if t < u32::from(w) {
            return k;
        }
        t -= u32::from(w);
    }
    unreachable!("t < total")
}

/// The first tag byte that selects `kind` (the encoder's choice).
fn tag_of<K: Copy + PartialEq>(table: &[(K, u8)], kind: K) -> u8 {
    let mut t = 0u8;
    for &(k, w) in table {
        if k == kind {
            return t;
        }
        t += w;
    }
    unreachable!("every kind is in its table")
}

/// Reads bytes; past the end it reads zeros.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }
    fn slot(&mut self) -> usize {
        usize::from(self.below(SLOTS))
    }
    fn key(&mut self) -> u8 {
        self.below(KEYS)
    }
    /// Mostly ctx 0, as in the generator: 0-3 → 0, 4-5 → 1, 6 → 2, 7 → 3 (byte % 8).
    fn ctx_index(&mut self) -> usize {
        match self.byte() % 8 {
            0..=3 => 0,
            4 | 5 => 1,
            6 => 2,
            _ => 3,
        }
    }
    fn op(&mut self) -> CtxOp {
        match pick(OP_WEIGHTS, self.byte()) {
            OpKind::SetWaitFd => {
                let key = self.key();
                let fd = i32::from(self.byte());
                let data = self.byte();
                let cleanup = self.byte() & 1 == 1;
                CtxOp::SetWaitFd {
                    key,
                    fd,
                    data,
                    cleanup,
                }
            }
            OpKind::GetFd => CtxOp::GetFd { key: self.key() },
            OpKind::AllFds => CtxOp::AllFds,
            OpKind::ChangedFds => CtxOp::ChangedFds,
            OpKind::ClearFd => CtxOp::ClearFd { key: self.key() },
            OpKind::SetStatus => CtxOp::SetStatus(i32::from(self.byte() as i8)),
            OpKind::GetStatus => CtxOp::GetStatus,
            OpKind::SetCallback => {
                let cb = match self.byte() % 3 {
                    0 => None,
                    c => Some(c - 1),
                };
                let arg = i32::from(self.byte());
                CtxOp::SetCallback { cb, arg }
            }
            OpKind::GetCallback => CtxOp::GetCallback,
        }
    }
    fn action(&mut self) -> Action {
        match pick(ACTION_WEIGHTS, self.byte()) {
            ActionKind::Pause => Action::Pause,
            ActionKind::Block => Action::Block,
            ActionKind::Unblock => Action::Unblock,
            ActionKind::CurrentJob => Action::CurrentJob,
            ActionKind::CurrentWaitCtx => Action::CurrentWaitCtx,
            ActionKind::Ctx => Action::Ctx(self.op()),
            ActionKind::ReadArgs => Action::ReadArgs,
        }
    }
    fn args(&mut self) -> ArgSpec {
        match self.byte() % 6 {
            0..=2 => ArgSpec::None,
            3 | 4 => {
                let n = 1 + self.below(MAX_ARGS);
                ArgSpec::Bytes((0..n).map(|_| self.byte()).collect())
            }
            _ => ArgSpec::NullWithSize(1 + usize::from(self.below(31))),
        }
    }
    fn step(&mut self) -> Step {
        match pick(STEP_WEIGHTS, self.byte()) {
            StepKind::Init => {
                let max = usize::from(self.below(MAX_POOL));
                let init = usize::from(self.below(MAX_INIT));
                Step::Init { max, init }
            }
            StepKind::Cleanup => Step::Cleanup,
            StepKind::NewCtx => Step::NewCtx,
            StepKind::FreeCtx => Step::FreeCtx(self.ctx_index()),
            StepKind::Start => {
                let slot = self.slot();
                let ctx = if self.byte() % 5 == 0 {
                    None
                } else {
                    Some(self.ctx_index())
                };
                let n = self.below(MAX_ACTIONS + 1);
                let actions = (0..n).map(|_| self.action()).collect();
                let ret = i32::from(self.byte());
                let args = self.args();
                Step::Start {
                    slot,
                    ctx,
                    script: Script { actions, ret },
                    args,
                }
            }
            StepKind::Resume => {
                let slot = self.slot();
                let decoy = self.byte() % 5 == 0;
                Step::Resume { slot, decoy }
            }
            StepKind::Ctx => {
                let ctx = self.ctx_index();
                let op = self.op();
                Step::Ctx { ctx, op }
            }
            StepKind::Block => Step::Block,
            StepKind::Unblock => Step::Unblock,
            StepKind::PauseOutside => Step::PauseOutside,
            StepKind::CurrentJobOutside => Step::CurrentJobOutside,
            StepKind::JobWaitCtx => Step::JobWaitCtx { slot: self.slot() },
            StepKind::IsCapable => Step::IsCapable,
            StepKind::ClobberArgs => Step::ClobberArgs,
        }
    }
}

/// Decodes any byte string into a (sanitised) scenario program; the same bytes always give the
/// same program.
pub fn from_bytes(data: &[u8]) -> Vec<Step> {
    let mut r = Reader { data, pos: 0 };
    let mut steps = Vec::new();
    while !r.at_end() && steps.len() < MAX_STEPS {
        steps.push(r.step());
    }
    sanitize(steps)
}

/// Appends bytes; values outside the decoder's ranges are reduced the way the decoder reduces them
/// (so an out-of-range program encodes to a nearby one).
struct Writer(Vec<u8>);

fn clamp_u8(v: usize) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

impl Writer {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
    fn ctx_index(&mut self, c: usize) {
        self.byte(match c {
            0 => 0,
            1 => 4,
            2 => 6,
            _ => 7,
        });
    }
    fn op(&mut self, op: &CtxOp) {
        let kind = match op {
            CtxOp::SetWaitFd { .. } => OpKind::SetWaitFd,
            CtxOp::GetFd { .. } => OpKind::GetFd,
            CtxOp::AllFds => OpKind::AllFds,
            CtxOp::ChangedFds => OpKind::ChangedFds,
            CtxOp::ClearFd { .. } => OpKind::ClearFd,
            CtxOp::SetStatus(_) => OpKind::SetStatus,
            CtxOp::GetStatus => OpKind::GetStatus,
            CtxOp::SetCallback { .. } => OpKind::SetCallback,
            CtxOp::GetCallback => OpKind::GetCallback,
        };
        self.byte(tag_of(OP_WEIGHTS, kind));
        match op {
            CtxOp::SetWaitFd {
                key,
                fd,
                data,
                cleanup,
            } => {
                self.byte(*key);
                self.byte(u8::try_from(*fd).unwrap_or(u8::MAX));
                self.byte(*data);
                self.byte(u8::from(*cleanup));
            }
            CtxOp::GetFd { key } | CtxOp::ClearFd { key } => self.byte(*key),
            CtxOp::SetStatus(s) => self.byte(i8::try_from(*s).unwrap_or(0) as u8),
            CtxOp::SetCallback { cb, arg } => {
                self.byte(cb.map_or(0, |c| c % 2 + 1));
                self.byte(u8::try_from(*arg).unwrap_or(u8::MAX));
            }
            CtxOp::AllFds | CtxOp::ChangedFds | CtxOp::GetStatus | CtxOp::GetCallback => {}
        }
    }
    fn action(&mut self, a: &Action) {
        let kind = match a {
            Action::Pause => ActionKind::Pause,
            Action::Block => ActionKind::Block,
            Action::Unblock => ActionKind::Unblock,
            Action::CurrentJob => ActionKind::CurrentJob,
            Action::CurrentWaitCtx => ActionKind::CurrentWaitCtx,
            Action::Ctx(_) => ActionKind::Ctx,
            Action::ReadArgs => ActionKind::ReadArgs,
        };
        self.byte(tag_of(ACTION_WEIGHTS, kind));
        if let Action::Ctx(op) = a {
            self.op(op);
        }
    }
    fn args(&mut self, a: &ArgSpec) {
        match a {
            ArgSpec::None => self.byte(0),
            ArgSpec::Bytes(b) => {
                self.byte(3);
                let n = b.len().clamp(1, usize::from(MAX_ARGS));
                self.byte(clamp_u8(n - 1));
                for i in 0..n {
                    self.byte(b.get(i).copied().unwrap_or(0));
                }
            }
            ArgSpec::NullWithSize(n) => {
                self.byte(5);
                self.byte(clamp_u8(n.clamp(&1, &31) - 1));
            }
        }
    }
    fn step(&mut self, s: &Step) {
        let kind = match s {
            Step::Init { .. } => StepKind::Init,
            Step::Cleanup => StepKind::Cleanup,
            Step::NewCtx => StepKind::NewCtx,
            Step::FreeCtx(_) => StepKind::FreeCtx,
            Step::Start { .. } => StepKind::Start,
            Step::Resume { .. } => StepKind::Resume,
            Step::Ctx { .. } => StepKind::Ctx,
            Step::Block => StepKind::Block,
            Step::Unblock => StepKind::Unblock,
            Step::PauseOutside => StepKind::PauseOutside,
            Step::CurrentJobOutside => StepKind::CurrentJobOutside,
            Step::JobWaitCtx { .. } => StepKind::JobWaitCtx,
            Step::IsCapable => StepKind::IsCapable,
            Step::ClobberArgs => StepKind::ClobberArgs,
        };
        self.byte(tag_of(STEP_WEIGHTS, kind));
        match s {
            Step::Init { max, init } => {
                self.byte(clamp_u8(*max) % MAX_POOL);
                self.byte(clamp_u8(*init) % MAX_INIT);
            }
            Step::FreeCtx(c) => self.ctx_index(*c),
            Step::Start {
                slot,
                ctx,
                script,
                args,
            } => {
                self.byte(clamp_u8(*slot) % SLOTS);
                match ctx {
                    None => self.byte(0),
                    Some(c) => {
                        self.byte(1);
                        self.ctx_index(*c);
                    }
                }
                let n = script.actions.len().min(usize::from(MAX_ACTIONS));
                self.byte(clamp_u8(n));
                for a in &script.actions[..n] {
                    self.action(a);
                }
                self.byte(u8::try_from(script.ret).unwrap_or(u8::MAX));
                self.args(args);
            }
            Step::Resume { slot, decoy } => {
                self.byte(clamp_u8(*slot) % SLOTS);
                self.byte(if *decoy { 0 } else { 1 });
            }
            Step::Ctx { ctx, op } => {
                self.ctx_index(*ctx);
                self.op(op);
            }
            Step::JobWaitCtx { slot } => self.byte(clamp_u8(*slot) % SLOTS),
            Step::Cleanup
            | Step::NewCtx
            | Step::Block
            | Step::Unblock
            | Step::PauseOutside
            | Step::CurrentJobOutside
            | Step::IsCapable
            | Step::ClobberArgs => {}
        }
    }
}

/// Encodes a program so that [`from_bytes`] gives it back when every value is inside the decoder's
/// ranges (true of everything [`crate::programs::program`] generates); other values are brought
/// into range.
pub fn to_bytes(steps: &[Step]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    for s in steps.iter().take(MAX_STEPS) {
        w.step(s);
    }
    w.0
}

/// Checks that a program stays where the fuzzer may go: every value inside the decoder's ranges,
/// and every job that may pause or touch its wait ctx started with one (OpenSSL dereferences a NULL
/// wait ctx there). Returns what is out of bounds.
pub fn check_bounds(steps: &[Step]) -> Result<(), String> {
    fn op_ok(op: &CtxOp) -> Result<(), String> {
        match op {
            CtxOp::SetWaitFd { key, fd, .. } if *key >= KEYS || !(0..=255).contains(fd) => {
                Err(format!("{op:?}: key or fd out of range"))
            }
            CtxOp::GetFd { key } | CtxOp::ClearFd { key } if *key >= KEYS => {
                Err(format!("{op:?}: key out of range"))
            }
            CtxOp::SetStatus(s) if i8::try_from(*s).is_err() => Err(format!("{op:?}: status")),
            CtxOp::SetCallback { cb, arg }
                if cb.is_some_and(|c| c > 1) || !(0..=255).contains(arg) =>
            {
                Err(format!("{op:?}: callback out of range"))
            }
            _ => Ok(()),
        }
    }
    if steps.len() > MAX_STEPS {
        return Err(format!("{} steps", steps.len()));
    }
    for s in steps {
        match s {
            Step::Init { max, init }
                if *max >= usize::from(MAX_POOL) || *init >= usize::from(MAX_INIT) =>
            {
                return Err(format!("{s}: pool sizes out of range"));
            }
            Step::FreeCtx(c) | Step::Ctx { ctx: c, .. } if *c >= CTX_INDICES => {
                return Err(format!("{s}: ctx index out of range"));
            }
            Step::Ctx { op, .. } => op_ok(op)?,
            Step::Resume { slot, .. } | Step::JobWaitCtx { slot }
                if *slot >= usize::from(SLOTS) =>
            {
                return Err(format!("{s}: slot out of range"));
            }
            Step::Start {
                slot,
                ctx,
                script,
                args,
            } => {
                if *slot >= usize::from(SLOTS) || ctx.is_some_and(|c| c >= CTX_INDICES) {
                    return Err(format!("{s}: slot or ctx out of range"));
                }
                if ctx.is_none() && script.needs_wait_ctx() {
                    return Err(format!("{s}: may pause or use its ctx, but has none"));
                }
                if script.actions.len() > usize::from(MAX_ACTIONS)
                    || !(0..=255).contains(&script.ret)
                {
                    return Err(format!("{s}: script out of range"));
                }
                for a in &script.actions {
                    if let Action::Ctx(op) = a {
                        op_ok(op)?;
                    }
                }
                match args {
                    ArgSpec::Bytes(b) if b.is_empty() || b.len() > usize::from(MAX_ARGS) => {
                        return Err(format!("{s}: args length"));
                    }
                    ArgSpec::NullWithSize(n) if !(1..=31).contains(n) => {
                        return Err(format!("{s}: args size"));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    #[test]
    fn tables_have_every_kind_once_and_tags_select_them() {
        for t in 0..=255u8 {
            let k = pick(STEP_WEIGHTS, t);
            assert_eq!(pick(STEP_WEIGHTS, tag_of(STEP_WEIGHTS, k)), k);
        }
        let total: u32 = STEP_WEIGHTS.iter().map(|&(_, w)| u32::from(w)).sum();
        assert!(total <= 256);
        assert_eq!(
            pick(ACTION_WEIGHTS, tag_of(ACTION_WEIGHTS, ActionKind::Ctx)),
            ActionKind::Ctx
        );
        assert_eq!(
            pick(OP_WEIGHTS, tag_of(OP_WEIGHTS, OpKind::GetCallback)),
            OpKind::GetCallback
        );
    }

    #[test]
    fn empty_input_is_the_empty_program_and_truncated_steps_read_zeros() {
        assert!(from_bytes(&[]).is_empty());
        // An Init tag with no field bytes: init_thread(0, 0).
        assert_eq!(
            from_bytes(&[tag_of(STEP_WEIGHTS, StepKind::Init)]),
            vec![Step::Init { max: 0, init: 0 }]
        );
    }

    #[test]
    fn long_input_is_cut_at_max_steps() {
        let nc = tag_of(STEP_WEIGHTS, StepKind::NewCtx);
        let steps = from_bytes(&[nc; 500]);
        assert_eq!(steps.len(), MAX_STEPS);
        assert!(steps.iter().all(|s| *s == Step::NewCtx));
    }

    #[test]
    fn a_job_that_pauses_without_a_ctx_gets_ctx_0() {
        let mut w = Writer(Vec::new());
        w.step(&Step::Start {
            slot: 1,
            ctx: None,
            script: Script::new(3, [Action::Pause]),
            args: ArgSpec::None,
        });
        let steps = from_bytes(&w.0);
        assert!(
            matches!(steps[..], [Step::Start { ctx: Some(0), .. }]),
            "{steps:?}"
        );
        check_bounds(&steps).expect("in bounds");
    }

    #[test]
    fn bounds_check_rejects_what_the_decoder_never_makes() {
        let bad = [
            Step::Init {
                max: 1 << 31,
                init: 0,
            },
            Step::FreeCtx(9),
            Step::Start {
                slot: 0,
                ctx: None,
                script: Script::new(0, [Action::Pause]),
                args: ArgSpec::None,
            },
            Step::Start {
                slot: 0,
                ctx: Some(0),
                script: Script::new(0, []),
                args: ArgSpec::Bytes(Vec::new()),
            },
        ];
        for s in bad {
            assert!(
                check_bounds(std::slice::from_ref(&s)).is_err(),
                "{s} accepted"
            );
        }
    }

    proptest! {
        #![proptest_config(Config { cases: 2000, failure_persistence: None, ..Config::default() })]

        #[test]
        fn any_bytes_decode_deterministically_to_a_program_in_bounds(
            data in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            let a = from_bytes(&data);
            prop_assert_eq!(&a, &from_bytes(&data));
            if let Err(e) = check_bounds(&a) {
                prop_assert!(false, "{}", e);
            }
            // Re-encoding a decoded program is a fixed point (the encoder is the decoder's inverse).
            prop_assert_eq!(from_bytes(&to_bytes(&a)), a);
        }

        #[test]
        fn generated_programs_round_trip(steps in crate::programs::program()) {
            prop_assert!(check_bounds(&steps).is_ok(), "{:?}", check_bounds(&steps));
            prop_assert_eq!(from_bytes(&to_bytes(&steps)), steps);
        }
    }
}

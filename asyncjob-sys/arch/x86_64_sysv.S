/*
 * asyncjob fiber switch for x86_64, System V ABI (Linux, the BSDs, macOS), ELF and Mach-O.
 *
 * Contract with csrc/fiber_asm.c (the same for every asm backend):
 *
 *   void *SWITCH(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
 *       SWITCH is asyncjob_fiber_switch, asyncjob_fiber_switch_into, asyncjob_fiber_switch_back
 *       and asyncjob_fiber_finish (see asyncjob_fiber.h), or
 *       asyncjob__arch_{switch,switch_into,switch_back,finish} when ASYNCJOB_SANITIZERS is
 *       defined (then the C file wraps them with the sanitizer annotations).
 *   void *START(asyncjob_fiber *from, asyncjob_fiber *to, void *value, void (*fn)(void *, void *));
 *       START is asyncjob_fiber_start, or asyncjob__arch_start in sanitizer builds.
 *   void *asyncjob__arch_init_stack(void *top, void (*fn)(void *, void *), void *arg);
 *       Builds the first-entry frame strictly below `top` and returns the value to store in the
 *       fiber's saved stack pointer. `top` is 16-byte aligned and is the address of the fiber struct.
 *   Fiber struct: offset 0 = saved stack pointer while suspended, offset 8 = link (the stack pointer
 *   of the context that last switched into this fiber; only read by unwinders), offset 16 = the
 *   argument a start passes to its function (what init_stack was given).
 *   If fn returns, the trampoline calls asyncjob__fiber_returned(), which never returns.
 *
 * Register roles in asyncjob_fiber_switch:
 *   rdi  from: the running fiber; its saved stack pointer goes to [rdi]
 *   rsi  to:   the fiber to resume; [rsi] is its saved stack pointer, [rsi+8] receives our link
 *   rdx  value, handed over in rax as the return value of the resumed switch (or, on first entry,
 *        as the second argument of fn through the trampoline)
 *   Saved (callee-saved by the ABI): rbp, rbx, r12-r15, the MXCSR control bits (6-15) and the x87
 *   control word; they are loaded into the target only when they differ from the current ones. The
 *   MXCSR status bits (0-5, sticky exception flags: caller-saved) are the thread's, not a context's,
 *   like the x87 status word. Everything else is caller-saved, so a call to the switch clobbers it
 *   anyway. Scratch: r9-r11.
 *
 * Saved frame of a suspended context (addresses grow upwards; sp = the saved stack pointer):
 *
 *   sp+56  return address (into the caller of the switch; the trampoline for a new fiber)
 *   sp+48  rbp
 *   sp+40  rbx
 *   sp+32  r12            new fiber: fn
 *   sp+24  r13            new fiber: arg
 *   sp+16  r14
 *   sp+8   r15
 *   sp+6   unused (2 bytes)
 *   sp+4   x87 control word (16 bits)
 *   sp+0   MXCSR (32 bits)
 *
 * The CFA of the switch's caller is sp+64. A new fiber's frame sits right below `top`, so when the
 * switch "returns" into the trampoline the stack pointer equals `top` (16-byte aligned), and the
 * trampoline's call leaves rsp+8 aligned at fn's entry as the ABI requires.
 *
 * Unwinding: the trampoline's CFI computes the CFA of the resumer from the link word, [top+8]+64, and
 * describes the resumer's rip/rbp/rbx/r12-r15 at the offsets above. gdb and a panic backtrace thus
 * walk from a fiber into the code that last resumed it. The trampoline is marked as a signal frame
 * because gdb refuses backtraces whose frame addresses do not increase, which fiber stacks violate.
 * The link is written when a fiber is resumed, never when it
 * yields back, so it stays right while a fiber resumes another one and is yielded back to.
 *
 * Returning into the resumed context: by default the switch ends with pop + indirect jmp instead of
 * ret. A ret is predicted by the return stack buffer to go back to the switch's own caller, which is
 * never right here, so every switch would pay a misprediction; the indirect jump is predicted from
 * branch history. The jump lands on a plain return address, which is not IBT-clean, so:
 *
 * Control-flow enforcement: when the build asks for IBT (__CET__ & 1, i.e. -fcf-protection=branch or
 * =full), the switch ends with ret; every global entry point and the trampoline start with endbr64,
 * so the object is then IBT-clean and says so in its GNU property note. Without IBT requested no note
 * is emitted (the linker then treats the object as not IBT-ready, which is true) and the switches,
 * the hot entry points, leave out their endbr64.
 * SHSTK is never claimed: switching stacks without switching shadow stacks would break it.
 *
 * Cost note: stmxcsr is microcoded and slow on some cores (about 2.5 ns per switch on the AMD EPYC
 * used for development); it stays because the ABI makes the MXCSR control bits callee-saved. Loads
 * (ldmxcsr, fldcw) are skipped when the control state does not change, see the switch.
 */

/* LOCAL: an assembler-local label (no symbol, so a Mach-O linker never starts an atom there). */
#if defined(__APPLE__)
#  define SYM(name) _##name
#  define LOCAL(name) L##name
#  define HIDDEN_BEGIN(name) .globl SYM(name); .private_extern SYM(name); .p2align 4; SYM(name):
#  define FUNC_END(name)
#  define PUBLIC_BEGIN(name) .globl SYM(name); .p2align 4; SYM(name):
#else
#  define SYM(name) name
#  define LOCAL(name) .L##name
#  define PUBLIC_BEGIN(name) .globl name; .type name, @function; .p2align 4; name:
#  define HIDDEN_BEGIN(name) .globl name; .hidden name; .type name, @function; .p2align 4; name:
#  define FUNC_END(name) .size name, . - name
#endif

/* IBT requested (-fcf-protection=branch or full): every indirect branch must land on endbr64. */
#if defined(__CET__) && (__CET__ & 1)
#  define ASYNCJOB_IBT 1
#else
#  define ASYNCJOB_IBT 0
#endif

/* Sanitizer builds wrap each switch in C (csrc/fiber_asm.c) with the sanitizers' annotations. */
#ifdef ASYNCJOB_SANITIZERS
#  define SWITCH_BEGIN HIDDEN_BEGIN(asyncjob__arch_switch)
#  define SWITCH_END FUNC_END(asyncjob__arch_switch)
#  define SWITCH_INTO_BEGIN HIDDEN_BEGIN(asyncjob__arch_switch_into)
#  define SWITCH_INTO_END FUNC_END(asyncjob__arch_switch_into)
#  define SWITCH_BACK_BEGIN HIDDEN_BEGIN(asyncjob__arch_switch_back)
#  define SWITCH_BACK_END FUNC_END(asyncjob__arch_switch_back)
#  define START_BEGIN HIDDEN_BEGIN(asyncjob__arch_start)
#  define START_END FUNC_END(asyncjob__arch_start)
#  define FINISH_BEGIN HIDDEN_BEGIN(asyncjob__arch_finish)
#  define FINISH_END FUNC_END(asyncjob__arch_finish)
#else
#  define SWITCH_BEGIN PUBLIC_BEGIN(asyncjob_fiber_switch)
#  define SWITCH_END FUNC_END(asyncjob_fiber_switch)
#  define SWITCH_INTO_BEGIN PUBLIC_BEGIN(asyncjob_fiber_switch_into)
#  define SWITCH_INTO_END FUNC_END(asyncjob_fiber_switch_into)
#  define SWITCH_BACK_BEGIN PUBLIC_BEGIN(asyncjob_fiber_switch_back)
#  define SWITCH_BACK_END FUNC_END(asyncjob_fiber_switch_back)
#  define START_BEGIN PUBLIC_BEGIN(asyncjob_fiber_start)
#  define START_END FUNC_END(asyncjob_fiber_start)
#  define FINISH_BEGIN PUBLIC_BEGIN(asyncjob_fiber_finish)
#  define FINISH_END FUNC_END(asyncjob_fiber_finish)
#endif
/* The switches are only ever called directly (a call lands on them, not an indirect jump), but an
   IBT-enabled build marks the object IBT-clean, so every global entry point then needs endbr64;
   without IBT it would be one wasted instruction per switch. */
#if ASYNCJOB_IBT
#  define ENDBR endbr64
#else
#  define ENDBR
#endif

    .text

/* Every switch: save the running context's callee-saved registers and floating-point control state
   in a frame on its stack and its stack pointer in `from`; rax = value, rcx = the target's saved stack
   pointer, r11 = this frame.
   Both macros name their parameter, the size of the floating-point slot: Apple's assembler reads
   `$8` in the body of a macro without named parameters as its eighth argument (`subq $8` became
   `subq , %rsp`, and `$0xffc0` would become the symbol `xffc0`). */
/* Where a saved frame keeps the callee-saved registers, relative to the CFA of the switch's caller. */
.macro SAVED_FRAME_CFI
    .cfi_offset %rbp, -16
    .cfi_offset %rbx, -24
    .cfi_offset %r12, -32
    .cfi_offset %r13, -40
    .cfi_offset %r14, -48
    .cfi_offset %r15, -56
.endm

.macro SWITCH_SAVE fp_slot=8
    SWITCH_SAVE_FRAME \fp_slot
    movq    (%rsi), %rcx
.endm

/* SWITCH_SAVE without the load of the target's stack pointer, for the start (whose target has no
   frame to restore). */
.macro SWITCH_SAVE_FRAME fp_slot=8
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rbp, -16
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rbx, -24
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_offset %r12, -32
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_offset %r13, -40
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_offset %r14, -48
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_offset %r15, -56
    subq    $\fp_slot, %rsp
    .cfi_adjust_cfa_offset \fp_slot
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, %r11              /* this frame holds the current floating-point control state */
    movq    %rdx, %rax
    movq    %rsp, (%rdi)
.endm

/* Every switch: continue on the target's stack, restore what its frame saved, and return into it. */
.macro SWITCH_RESTORE fp_slot=8
    /* From here on the frame being described is the target's, which has the same layout. */
    movq    %rcx, %rsp
    /* Floating-point control state: loaded only when the target's differs from the current one (the
       MXCSR's bits 6-15, the x87 control word). Loading either serialises on some cores, and loading
       an MXCSR that differs only in its sticky exception flags (bits 0-5, set by any inexact result)
       doubled the wall time of a round trip on the AMD EPYC used for development. Those status flags
       stay the thread's, as the x87 status word always did (and as with OpenSSL's _longjmp switch,
       which keeps no floating-point state at all): the merged value keeps the current ones. */
    /* Each compared at the size it was stored with, so that the loads of the current values just
       stored are forwarded from the stores (a wider load would wait for them to reach the cache). */
    movl    (%rsp), %r10d
    xorl    (%r11), %r10d
    testl   $0xffc0, %r10d
    jnz     3f
    movzwl  4(%rsp), %r10d
    cmpw    4(%r11), %r10w
    je      2f
3:
    movl    (%r11), %r10d
    andl    $0x3f, %r10d
    movl    (%rsp), %r9d
    andl    $0xffc0, %r9d
    orl     %r10d, %r9d
    movl    %r9d, (%rsp)
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
2:
    addq    $\fp_slot, %rsp
    .cfi_adjust_cfa_offset -\fp_slot
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
#if ASYNCJOB_IBT
    ret
#else
    /* pop + jmp rather than ret: the return stack buffer predicts a ret to return to our own
       caller, so it would mispredict on every switch; the indirect jump is predicted from branch
       history (about 2x faster round trips). */
    popq    %rcx
    .cfi_adjust_cfa_offset -8
    .cfi_register %rip, %rcx
    jmpq    *%rcx
#endif
.endm

/* The target's link (for unwinding into its resumer): asyncjob_fiber_switch writes it only when `to`
   is being resumed by `from`. When `from` yields back to the context that resumed it (from->link ==
   to->sp), the target's own link must stay: it may be a fiber that was itself resumed by another
   context. The two specialised entry points below skip that test where the caller knows the answer. */

/* void *asyncjob_fiber_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value) */
SWITCH_BEGIN
    .cfi_startproc
    ENDBR
    SWITCH_SAVE
    cmpq    %rcx, 8(%rdi)
    je      1f
    movq    %rsp, 8(%rsi)
1:
    SWITCH_RESTORE
    .cfi_endproc
SWITCH_END

/* void *asyncjob_fiber_switch_into(asyncjob_fiber *from, asyncjob_fiber *to, void *value):
   `to` is being resumed (or entered) by `from`, so its link is written. */
SWITCH_INTO_BEGIN
    .cfi_startproc
    ENDBR
    SWITCH_SAVE
    movq    %rsp, 8(%rsi)
    SWITCH_RESTORE
    .cfi_endproc
SWITCH_INTO_END

/* void *asyncjob_fiber_switch_back(asyncjob_fiber *from, asyncjob_fiber *to, void *value):
   `to` is the context that last resumed `from`; its link stays. */
SWITCH_BACK_BEGIN
    .cfi_startproc
    ENDBR
    SWITCH_SAVE
    SWITCH_RESTORE
    .cfi_endproc
SWITCH_BACK_END

/* void *asyncjob_fiber_start(asyncjob_fiber *from, asyncjob_fiber *to, void *value,
                             void (*fn)(void *, void *)):
   saves `from` as a switch does, then begins a run of fn on `to`'s empty stack: the trampoline with
   rsp = top = `to`, r12 = fn, r13 = the argument kept in the fiber struct, rax = value. No frame of
   `to` is restored, so the run keeps the current floating-point control state. */
START_BEGIN
    .cfi_startproc
    ENDBR
    SWITCH_SAVE_FRAME
    movq    %rsp, 8(%rsi)
    movq    %rsi, %rsp
    /* As in the trampoline: CFA = [rsp + 8] + 64, the frame just saved, reached through the link. */
    .cfi_escape 0x0f, 5, 0x77, 0x08, 0x06, 0x23, 0x40
    movq    %rcx, %r12
    movq    16(%rsi), %r13
    /* A new run ends frame-pointer chains, as a new fiber's first-entry frame does. */
    xorl    %ebp, %ebp
    jmp     LOCAL(asyncjob__x86_64_trampoline_entry)
    .cfi_endproc
START_END

/* void *asyncjob_fiber_finish(asyncjob_fiber *from, asyncjob_fiber *to, void *value): never returns.
   Ends the run of `from` without saving anything of it and resumes `to` with `value`. The current
   floating-point control state, which SWITCH_RESTORE compares with the target's, is stored just
   below the target's frame: that is free stack of a suspended context (and no signal handler runs
   on it while it is suspended). */
FINISH_BEGIN
    .cfi_startproc
    ENDBR
    movq    %rdx, %rax
    movq    (%rsi), %rcx
    stmxcsr -8(%rcx)
    fnstcw  -4(%rcx)
    leaq    -8(%rcx), %r11
    movq    %rcx, %rsp
    /* From here on the target's saved frame is described, as after SWITCH_SAVE. */
    .cfi_def_cfa_offset 64
    SAVED_FRAME_CFI
    SWITCH_RESTORE
    .cfi_endproc
FINISH_END

/*
 * First code run by a new fiber, reached by the `ret` of the switch. rsp == top, r12 = fn,
 * r13 = arg, rax = the value given to the switch.
 */
    .p2align 4
    /* The symbol starts the FDE and the entry is a local label: a symbol inside the FDE would let a
       Mach-O linker split the code there into its own atom without the FDE (zig's does: the entry
       then had no unwind info and backtraces from a fiber stopped at the trampoline). */
SYM(asyncjob__x86_64_trampoline):
    .cfi_startproc
    .cfi_signal_frame
    /* CFA = [rsp + 8] + 64: DW_CFA_def_cfa_expression, 5 bytes: DW_OP_breg7 8, DW_OP_deref,
       DW_OP_plus_uconst 64. */
    .cfi_escape 0x0f, 5, 0x77, 0x08, 0x06, 0x23, 0x40
    .cfi_offset %rip, -8
    SAVED_FRAME_CFI
    /* Keeps the return address that points at the label inside this FDE for unwinders that look
       up address - 1. */
    nop
LOCAL(asyncjob__x86_64_trampoline_entry):
    endbr64
    movq    %r13, %rdi
    movq    %rax, %rsi
    callq   *%r12
    /* fn must never return. */
    callq   SYM(asyncjob__fiber_returned)
    ud2
    .cfi_endproc

/* void *asyncjob__arch_init_stack(void *top, void (*fn)(void *, void *), void *arg) */
HIDDEN_BEGIN(asyncjob__arch_init_stack)
    .cfi_startproc
    endbr64
    leaq    LOCAL(asyncjob__x86_64_trampoline_entry)(%rip), %rax
    movq    %rax, -8(%rdi)          /* return address */
    movq    $0, -16(%rdi)           /* rbp: ends frame-pointer chains */
    movq    $0, -24(%rdi)           /* rbx */
    movq    %rsi, -32(%rdi)         /* r12 = fn */
    movq    %rdx, -40(%rdi)         /* r13 = arg */
    movq    $0, -48(%rdi)           /* r14 */
    movq    $0, -56(%rdi)           /* r15 */
    /* The new fiber starts with the creator's floating-point control state. */
    stmxcsr -64(%rdi)
    fnstcw  -60(%rdi)
    movw    $0, -58(%rdi)
    leaq    -64(%rdi), %rax
    ret
    .cfi_endproc
FUNC_END(asyncjob__arch_init_stack)

#if defined(__ELF__)
    .section .note.GNU-stack,"",@progbits

#  if ASYNCJOB_IBT
    /* GNU property note: GNU_PROPERTY_X86_FEATURE_1_AND = IBT only (see the top of the file). */
    .section .note.gnu.property,"a"
    .p2align 3
    .long 4                 /* name size ("GNU\0") */
    .long 16                /* descriptor size */
    .long 5                 /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz "GNU"
    .long 0xc0000002        /* GNU_PROPERTY_X86_FEATURE_1_AND */
    .long 4                 /* property data size */
    .long 1                 /* GNU_PROPERTY_X86_FEATURE_1_IBT */
    .p2align 3
#  endif
#endif

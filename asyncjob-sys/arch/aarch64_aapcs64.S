/*
 * asyncjob fiber switch for aarch64, AAPCS64 (Linux, the BSDs, Android, macOS/iOS), ELF and Mach-O.
 *
 * Contract with csrc/fiber_asm.c (the same for every asm backend, see arch/x86_64_sysv.S):
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
 *   x0   from: the running fiber; its saved stack pointer goes to [x0]
 *   x1   to:   the fiber to resume; [x1] is its saved stack pointer, [x1+8] receives our link
 *   x2   value, handed over in x0 as the return value of the resumed switch (or, on first entry,
 *        as the second argument of fn through the trampoline)
 *   x9   scratch
 *   Saved (callee-saved by AAPCS64): x19-x28, x29 (frame pointer), x30 (link register, i.e. where the
 *   switch returns to), d8-d15 (the low 64 bits of v8-v15; the upper halves are caller-saved), and sp
 *   itself through the fiber struct. Everything else is caller-saved, so a call to the switch
 *   clobbers it anyway. x18 (the platform register) is left alone: it belongs to the thread.
 *   FPCR/FPSR are not switched (writing FPCR is slow on several cores): a fiber resumes with the
 *   floating-point mode that is current at the switch. AAPCS64 requires a function that changes the
 *   FPCR mode fields to restore them before returning, so only a job that pauses in the middle of such
 *   a change can notice; the x86_64 backend, by contrast, does carry MXCSR with each fiber.
 *
 * Saved frame of a suspended context (addresses grow upwards; sp = the saved stack pointer):
 *
 *   sp+152 d15             sp+88  x30 (return address: the caller of the switch; the trampoline
 *   sp+144 d14                        for a new fiber)
 *   sp+136 d13             sp+80  x29 (0 for a new fiber: ends frame-pointer chains)
 *   sp+128 d12             sp+72  x28
 *   sp+120 d11               ...
 *   sp+112 d10             sp+16  x21
 *   sp+104 d9              sp+8   x20     new fiber: arg
 *   sp+96  d8              sp+0   x19     new fiber: fn
 *
 * The CFA of the switch's caller is sp+160. A new fiber's 160-byte frame sits right below `top`, so
 * when the switch "returns" into the trampoline the stack pointer equals `top` (16-byte aligned, as
 * AAPCS64 requires at every public interface), and fn starts on that aligned stack.
 *
 * Unwinding: the trampoline's CFI computes the CFA of the resumer from the link word, [top+8]+160, and
 * describes the resumer's x19-x30 and d8-d15 at the offsets above. gdb and a panic backtrace thus walk
 * from a fiber into the code that last resumed it. The trampoline is marked as a signal frame because
 * gdb refuses backtraces whose frame addresses do not increase, which fiber stacks violate. The link is written when a fiber is resumed, never when it
 * yields back, so it stays right while a fiber resumes another one and is yielded back to.
 * Frame-pointer walkers (perf --call-graph=fp) stop at the fiber root, whose frame record holds x29=0.
 *
 * Returning into the resumed context: by default the switch ends with `br x30` instead of `ret`. A
 * ret is predicted by the return-address stack to go back to the switch's own caller, which is never
 * right here, so every switch would pay a misprediction; `br` is predicted from branch history (the
 * same choice as the pop+jmp of arch/x86_64_sysv.S, where it halves the round trip; on aarch64 this
 * has been checked for correctness under qemu only, not timed on hardware). `br` lands on a plain
 * return address, which is not a BTI landing pad, so:
 *
 * Branch protection, and what the GNU property note claims (ELF only):
 *   BTI: when the build asks for it (-mbranch-protection=bti or =standard, visible as
 *        __ARM_FEATURE_BTI_DEFAULT) the switch ends with `ret`, which BTI does not check. Every global
 *        entry point starts with `bti c` in all builds (a hint: a no-op on cores without BTI); the
 *        trampoline is only ever reached by the switch's return. So a BTI build is BTI-clean and says
 *        so in the note; any other build does not claim BTI (the linker then marks the program as
 *        not BTI-ready, which is true).
 *   PAC: only when the compiler is asked for it (-mbranch-protection=pac-ret or =standard, visible
 *        as __ARM_FEATURE_PAC_DEFAULT): then the switch signs x30 against sp on entry and
 *        authenticates it before returning, init_stack signs the trampoline address against `top`
 *        (the sp at which the switch will authenticate it), the CFI says the return address is
 *        signed (.cfi_negate_ra_state), and the note claims PAC. Without it nothing is signed and
 *        PAC is not claimed. All PAC instructions used are in the hint space, so a PAC build still
 *        runs (unprotected) on ARMv8.0 cores.
 *   GCS (guarded control stack) is never claimed: switching stacks without switching the GCS would
 *        break it.
 */

#if defined(__ARM_FEATURE_PAC_DEFAULT) && (__ARM_FEATURE_PAC_DEFAULT & 3)
#  define AJ_PAC 1
#  define AJ_NOTE_PAC 2
#else
#  define AJ_PAC 0
#  define AJ_NOTE_PAC 0
#endif
#if defined(__ARM_FEATURE_BTI_DEFAULT)
#  define AJ_BTI 1
#  define AJ_NOTE_BTI 1
#else
#  define AJ_BTI 0
#  define AJ_NOTE_BTI 0
#endif

/* Symbols: Mach-O prefixes C names with an underscore and has no .type/.size. Apple's assembler uses
   ';' as its comment character, so these are assembler macros rather than one-line C macros. */
#define AJ_CAT(a, b) a##b
#if defined(__APPLE__)
#  define SYM(name) AJ_CAT(_, name)
#else
#  define SYM(name) name
#endif

.macro aj_public name
    .globl \name
#if !defined(__APPLE__)
    .type \name, %function
#endif
    .p2align 4
\name:
.endm

.macro aj_hidden name
    .globl \name
#if defined(__APPLE__)
    .private_extern \name
#else
    .hidden \name
    .type \name, %function
#endif
    .p2align 4
\name:
.endm

.macro aj_end name
#if !defined(__APPLE__)
    .size \name, . - \name
#endif
.endm

/* Return-address signing against sp (PACIASP/PACIBSP, AUTIASP/AUTIBSP) and signing x17 with the
   modifier x16 (PACIA1716/PACIB1716), written as hints so any assembler and any core accepts them.
   __ARM_FEATURE_PAC_DEFAULT bit 0 selects the A key, bit 1 the B key. */
.macro aj_sign_lr
#if AJ_PAC
#  if __ARM_FEATURE_PAC_DEFAULT & 1
    hint #25
#  else
    hint #27
#  endif
    .cfi_negate_ra_state
#endif
.endm

.macro aj_auth_lr
#if AJ_PAC
#  if __ARM_FEATURE_PAC_DEFAULT & 1
    hint #29
#  else
    hint #31
#  endif
    .cfi_negate_ra_state
#endif
.endm

.macro aj_cfi_key
#if AJ_PAC && !(__ARM_FEATURE_PAC_DEFAULT & 1)
    .cfi_b_key_frame
#endif
.endm

#define BTI_C hint #34

/* Sanitizer builds wrap each switch in C (csrc/fiber_asm.c) with the sanitizers' annotations. */
#ifdef ASYNCJOB_SANITIZERS
#  define SWITCH_NAME asyncjob__arch_switch
#  define SWITCH_INTO_NAME asyncjob__arch_switch_into
#  define SWITCH_BACK_NAME asyncjob__arch_switch_back
#  define START_NAME asyncjob__arch_start
#  define FINISH_NAME asyncjob__arch_finish
#  define SWITCH_KIND aj_hidden
#else
#  define SWITCH_NAME asyncjob_fiber_switch
#  define SWITCH_INTO_NAME asyncjob_fiber_switch_into
#  define SWITCH_BACK_NAME asyncjob_fiber_switch_back
#  define START_NAME asyncjob_fiber_start
#  define FINISH_NAME asyncjob_fiber_finish
#  define SWITCH_KIND aj_public
#endif

    .text

/* Where a saved frame keeps the callee-saved registers, relative to the CFA of the switch's caller. */
.macro aj_saved_frame_cfi
    .cfi_offset x19, -160
    .cfi_offset x20, -152
    .cfi_offset x21, -144
    .cfi_offset x22, -136
    .cfi_offset x23, -128
    .cfi_offset x24, -120
    .cfi_offset x25, -112
    .cfi_offset x26, -104
    .cfi_offset x27, -96
    .cfi_offset x28, -88
    .cfi_offset x29, -80
    .cfi_offset x30, -72
    /* d8-d15 are DWARF registers 72-79 (numbers: not every assembler takes their names here). */
    .cfi_offset 72, -64
    .cfi_offset 73, -56
    .cfi_offset 74, -48
    .cfi_offset 75, -40
    .cfi_offset 76, -32
    .cfi_offset 77, -24
    .cfi_offset 78, -16
    .cfi_offset 79, -8
.endm

/* Every switch: save the running context's callee-saved registers in a frame on its stack and its
   stack pointer in `from`; x9 = this frame, x10 = the target's saved stack pointer. */
.macro aj_switch_save
    aj_cfi_key
    BTI_C
    aj_sign_lr
    sub     sp, sp, #160
    .cfi_def_cfa_offset 160
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    aj_saved_frame_cfi
    mov     x9, sp
    str     x9, [x0]
    ldr     x10, [x1]
.endm

/* Every switch: continue on the target's stack, restore what its frame saved, and return into it. */
.macro aj_switch_restore
    /* From here on the frame being described is the target's, which has the same layout. */
    mov     sp, x10
    mov     x0, x2
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #160
    .cfi_def_cfa_offset 0
    .cfi_restore x19
    .cfi_restore x20
    .cfi_restore x21
    .cfi_restore x22
    .cfi_restore x23
    .cfi_restore x24
    .cfi_restore x25
    .cfi_restore x26
    .cfi_restore x27
    .cfi_restore x28
    .cfi_restore x29
    .cfi_restore x30
    .cfi_restore 72
    .cfi_restore 73
    .cfi_restore 74
    .cfi_restore 75
    .cfi_restore 76
    .cfi_restore 77
    .cfi_restore 78
    .cfi_restore 79
    aj_auth_lr
#if AJ_BTI
    ret
#else
    /* br rather than ret: the return-address stack would predict our own caller, never right. */
    br      x30
#endif
.endm

/* The target's link (for unwinding into its resumer): asyncjob_fiber_switch writes it only when `to`
   is being resumed by `from`. When `from` yields back to the context that resumed it (from->link ==
   to->sp), the target's own link must stay: it may be a fiber that was itself resumed by another
   context. The two specialised entry points below skip that test where the caller knows the answer. */

/* void *asyncjob_fiber_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value) */
SWITCH_KIND SYM(SWITCH_NAME)
    .cfi_startproc
    aj_switch_save
    ldr     x11, [x0, #8]
    cmp     x10, x11
    b.eq    1f
    str     x9, [x1, #8]
1:
    aj_switch_restore
    .cfi_endproc
aj_end SYM(SWITCH_NAME)

/* void *asyncjob_fiber_switch_into(asyncjob_fiber *from, asyncjob_fiber *to, void *value):
   `to` is being resumed (or entered) by `from`, so its link is written. */
SWITCH_KIND SYM(SWITCH_INTO_NAME)
    .cfi_startproc
    aj_switch_save
    str     x9, [x1, #8]
    aj_switch_restore
    .cfi_endproc
aj_end SYM(SWITCH_INTO_NAME)

/* void *asyncjob_fiber_switch_back(asyncjob_fiber *from, asyncjob_fiber *to, void *value):
   `to` is the context that last resumed `from`; its link stays. */
SWITCH_KIND SYM(SWITCH_BACK_NAME)
    .cfi_startproc
    aj_switch_save
    aj_switch_restore
    .cfi_endproc
aj_end SYM(SWITCH_BACK_NAME)

/* void *asyncjob_fiber_start(asyncjob_fiber *from, asyncjob_fiber *to, void *value,
                             void (*fn)(void *, void *)):
   saves `from` as a switch does, then begins a run of fn on `to`'s empty stack: the trampoline with
   sp = top = `to`, x19 = fn, x20 = the argument kept in the fiber struct, x0 = value, x29 = 0 (a new
   run ends frame-pointer chains, as a new fiber's first-entry frame does). */
SWITCH_KIND SYM(START_NAME)
    .cfi_startproc
    aj_switch_save
    str     x9, [x1, #8]
    mov     sp, x1
    /* As in the trampoline: CFA = [sp + 8] + 160, the frame just saved, reached through the link. */
    .cfi_escape 0x0f, 6, 0x8f, 0x08, 0x06, 0x23, 0xa0, 0x01
    mov     x19, x3
    ldr     x20, [x1, #16]
    mov     x0, x2
    mov     x29, xzr
    b       SYM(asyncjob__aarch64_trampoline)
    .cfi_endproc
aj_end SYM(START_NAME)

/* void *asyncjob_fiber_finish(asyncjob_fiber *from, asyncjob_fiber *to, void *value): never returns.
   Ends the run of `from` without saving anything of it and resumes `to` with `value`. */
SWITCH_KIND SYM(FINISH_NAME)
    .cfi_startproc
    aj_cfi_key
    BTI_C
    ldr     x10, [x1]
    mov     sp, x10
    /* From here on the target's saved frame is described, as after aj_switch_save (its x30 is
       signed when PAC is on). */
    .cfi_def_cfa_offset 160
    aj_saved_frame_cfi
#if AJ_PAC
    .cfi_negate_ra_state
#endif
    aj_switch_restore
    .cfi_endproc
aj_end SYM(FINISH_NAME)

/*
 * First code run by a new fiber, reached by the return (ret or br) of the switch: sp == top, x19 = fn, x20 = arg,
 * x0 = the value given to the switch. x29 = 0 from the initial frame, so fn's frame record ends the
 * frame-pointer chain.
 */
    .p2align 4
    .cfi_startproc
    .cfi_signal_frame
    aj_cfi_key
#if AJ_PAC
    /* The resumer's x30 was signed by its switch against its sp at entry, which is this CFA. */
    .cfi_negate_ra_state
#endif
    /* CFA = [sp + 8] + 160: DW_CFA_def_cfa_expression, 6 bytes: DW_OP_breg31 (sp) 8, DW_OP_deref,
       DW_OP_plus_uconst 160 (ULEB128 0xa0 0x01). */
    .cfi_escape 0x0f, 6, 0x8f, 0x08, 0x06, 0x23, 0xa0, 0x01
    aj_saved_frame_cfi
    /* Keeps a return address that points at the label inside this FDE for unwinders that look up
       address - 1. */
    nop
SYM(asyncjob__aarch64_trampoline):
    mov     x1, x0
    mov     x0, x20
    blr     x19
    /* fn must never return. */
    bl      SYM(asyncjob__fiber_returned)
    brk     #1
    .cfi_endproc

/* void *asyncjob__arch_init_stack(void *top, void (*fn)(void *, void *), void *arg) */
aj_hidden SYM(asyncjob__arch_init_stack)
    .cfi_startproc
    BTI_C
    sub     x9, x0, #160            /* the new fiber's saved stack pointer */
    adr     x17, SYM(asyncjob__aarch64_trampoline)
#if AJ_PAC
    /* Sign the trampoline address with the sp the switch will authenticate it against: top. */
    mov     x16, x0
#  if __ARM_FEATURE_PAC_DEFAULT & 1
    hint    #8                      /* PACIA1716 */
#  else
    hint    #10                     /* PACIB1716 */
#  endif
#endif
    stp     x1,  x2,  [x9, #0]      /* x19 = fn, x20 = arg */
    stp     xzr, xzr, [x9, #16]     /* x21, x22 */
    stp     xzr, xzr, [x9, #32]     /* x23, x24 */
    stp     xzr, xzr, [x9, #48]     /* x25, x26 */
    stp     xzr, xzr, [x9, #64]     /* x27, x28 */
    stp     xzr, x17, [x9, #80]     /* x29 = 0, x30 = trampoline */
    stp     xzr, xzr, [x9, #96]     /* d8, d9 */
    stp     xzr, xzr, [x9, #112]    /* d10, d11 */
    stp     xzr, xzr, [x9, #128]    /* d12, d13 */
    stp     xzr, xzr, [x9, #144]    /* d14, d15 */
    mov     x0, x9
    ret
    .cfi_endproc
aj_end SYM(asyncjob__arch_init_stack)

#if defined(__ELF__)
    .section .note.GNU-stack,"",%progbits

#  if AJ_NOTE_BTI | AJ_NOTE_PAC
    /* GNU property note: GNU_PROPERTY_AARCH64_FEATURE_1_AND = BTI and/or PAC, each only when the
       build asked for it (see the top of the file). The linker keeps a bit only if every input
       object sets it. */
    .section .note.gnu.property,"a"
    .p2align 3
    .long 4                 /* name size ("GNU\0") */
    .long 16                /* descriptor size */
    .long 5                 /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz "GNU"
    .long 0xc0000000        /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
    .long 4                 /* property data size */
    .long AJ_NOTE_BTI | AJ_NOTE_PAC
    .long 0                 /* pad the descriptor to 8 bytes */
#  endif
#endif

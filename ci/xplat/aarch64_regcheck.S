/*
 * Test helper for ci/xplat/aarch64_switch_test.c: proves that asyncjob_fiber_switch preserves every
 * AAPCS64 callee-saved register (x19-x29, d8-d15) and sp across a round trip, whatever the other
 * fiber does with them. C code cannot pin values in callee-saved registers reliably, hence asm.
 *
 * int aj_test_regcheck(asyncjob_fiber *from, asyncjob_fiber *to, void *value)
 *   Loads a distinct pattern into x19-x28 and d8-d15, calls asyncjob_fiber_switch(from, to, value),
 *   and returns how many of x19-x29, d8-d15 and sp differ from what they were before the call.
 */
    .text
    .globl aj_test_regcheck
    .type aj_test_regcheck, %function
    .p2align 4
aj_test_regcheck:
    hint    #34                     /* bti c */
    stp     x29, x30, [sp, #-176]!
    mov     x29, sp
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]

    .irp r, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28
    movz    x\r, #0x\r\r, lsl #48
    movk    x\r, #0xa5a5
    .endr
    .irp r, 8, 9, 10, 11, 12, 13, 14, 15
    movz    x9, #0xd0\r, lsl #32
    movk    x9, #0x5a5a
    fmov    d\r, x9
    .endr
    mov     x9, sp
    str     x9, [sp, #160]          /* sp before the call, to compare afterwards */

    bl      asyncjob_fiber_switch

    mov     x0, #0                  /* mismatch count */
    .irp r, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28
    movz    x10, #0x\r\r, lsl #48
    movk    x10, #0xa5a5
    cmp     x\r, x10
    cinc    x0, x0, ne
    .endr
    .irp r, 8, 9, 10, 11, 12, 13, 14, 15
    movz    x10, #0xd0\r, lsl #32
    movk    x10, #0x5a5a
    fmov    x11, d\r
    cmp     x11, x10
    cinc    x0, x0, ne
    .endr
    mov     x10, sp
    cmp     x29, x10                /* x29 was set to sp in the prologue */
    cinc    x0, x0, ne
    ldr     x11, [sp, #160]
    cmp     x10, x11
    cinc    x0, x0, ne

    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    ldp     x29, x30, [sp], #176
    ret
    .size aj_test_regcheck, . - aj_test_regcheck

    .globl aj_test_clobber_and_switch
    .type aj_test_clobber_and_switch, %function
    .p2align 4
/* void *aj_test_clobber_and_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value):
   like asyncjob_fiber_switch, but first fills x19-x28 and d8-d15 with garbage (saving and restoring
   the caller's values around it), so a switch that failed to restore the other side's registers
   would hand it this garbage. */
aj_test_clobber_and_switch:
    hint    #34
    stp     x29, x30, [sp, #-160]!
    mov     x29, sp
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    .irp r, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28
    mov     x\r, #-1
    .endr
    .irp r, 8, 9, 10, 11, 12, 13, 14, 15
    fmov    d\r, x19
    .endr
    bl      asyncjob_fiber_switch
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    ldp     x29, x30, [sp], #160
    ret
    .size aj_test_clobber_and_switch, . - aj_test_clobber_and_switch

    .section .note.GNU-stack,"",%progbits

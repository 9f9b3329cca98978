//! The depthwise 3x3 pixel loop ([`super::dw3x3_pixel`]) for layers whose clamp is `[0,
//! 32767]` (ReLU on int16 outputs with a zero point of 0, every DS-CNN and MobileNet depthwise
//! layer): the clamp as one USAT per lane instead of two compares with their ITs and moves.

use super::DwPixelParams;

/// [`super::dw3x3_pixel`] for parameters whose clamp is `[0, 32767]` (the caller checks; the
/// clamp words of `k` are not read): the same results. With the DSP extension 57 instructions
/// per channel pair where [`super::dw3x3_pixel`] takes 67.
#[inline(always)]
pub fn dw3x3_pixel_relu16(rows: [&[u32]; 3], step: usize, k: &DwPixelParams, out: &mut [u32]) {
    let n = k.pairs;
    let need = step.wrapping_mul(2).wrapping_add(n);
    if n == 0 || step == 0 || step > 1 << 20 || out.len() < n || rows.iter().any(|r| r.len() < need)
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let [r0, r1, r2] = rows;
        // SAFETY: as `dw3x3_pixel`'s (the same loads, stores and loop; the clamp's two words
        // are stepped over instead of loaded). The check above. Pair `j` (the loop runs
        // exactly `n = k.pairs` times: the `more` words of `DwPixelParams`, private to
        // `simd`, are nonzero for `j < n − 1`
        // and zero for `j = n − 1`) reads words `j`, `j + step` and `j + 2 · step` of each row
        // (r0..r2 advance one word per pair after the first load; r3, r4 are the other two
        // taps' byte offsets less that word), all below `2 · step + n <= len`; it reads the 20
        // words of pair `j` of `k.words` (r5 advances 80 bytes per pair, `n <= DW_PIXEL_PAIRS`)
        // and writes word `j` of `out` (`n <= out.len()`). No stack; only the named registers
        // and the flags (with Q) change. LDRD, SMLABB, SMLATT, SMLAL, USAT, PKHBT exist on every
        // icefold_dsp core; r6 and r7 (LLVM's base and frame pointers) are not touched.
        unsafe {
            core::arch::asm!(
            "1:",
            "ldrd r8, r9, [r5], #8",
            // kernel row 0
            "ldr r10, [r0], #4",
            "ldrd r11, lr, [r5], #8",
            "smlabb r8, r11, r10, r8",
            "smlatt r9, r11, r10, r9",
            "ldr r10, [r0, r3]",
            "smlabb r8, lr, r10, r8",
            "smlatt r9, lr, r10, r9",
            "ldr r10, [r0, r4]",
            "ldrd r11, lr, [r5], #8",
            "smlabb r8, r11, r10, r8",
            "smlatt r9, r11, r10, r9",
            // kernel row 1
            "ldr r10, [r1], #4",
            "smlabb r8, lr, r10, r8",
            "smlatt r9, lr, r10, r9",
            "ldr r10, [r1, r3]",
            "ldrd r11, lr, [r5], #8",
            "smlabb r8, r11, r10, r8",
            "smlatt r9, r11, r10, r9",
            "ldr r10, [r1, r4]",
            "smlabb r8, lr, r10, r8",
            "smlatt r9, lr, r10, r9",
            // kernel row 2
            "ldr r10, [r2], #4",
            "ldrd r11, lr, [r5], #8",
            "smlabb r8, r11, r10, r8",
            "smlatt r9, r11, r10, r9",
            "ldr r10, [r2, r3]",
            "smlabb r8, lr, r10, r8",
            "smlatt r9, lr, r10, r9",
            "ldr r10, [r2, r4]",
            "ldr r11, [r5], #4",
            "smlabb r8, r11, r10, r8",
            "smlatt r9, r11, r10, r9",
            // output stage, lane 0 (see `requant_run`)
            "and r10, r8, #0x80000000",
            "orr r10, r10, #0x40000000",
            "ldr r11, [r5], #4",
            "add r11, r11, r8, asr #31",
            "ldr lr, [r5], #4",
            "smlal r10, r11, r8, lr",
            "ldr lr, [r5], #4",
            "asr r8, r11, lr",
            // lane 1
            "and r10, r9, #0x80000000",
            "orr r10, r10, #0x40000000",
            "ldr r11, [r5], #4",
            "add r11, r11, r9, asr #31",
            "ldr lr, [r5], #4",
            "smlal r10, r11, r9, lr",
            "ldr lr, [r5], #4",
            "asr r9, r11, lr",
            // clamp to [0, 32767]; the clamp's two words skipped
            "add r5, r5, #8",
            "usat r8, #15, r8",
            "usat r9, #15, r9",
            "pkhbt r8, r8, r9, lsl #16",
            "str r8, [r12], #4",
            "ldr r10, [r5], #4",
            "cmp r10, #0",
            "bne 1b",
            inout("r0") r0.as_ptr() => _, inout("r1") r1.as_ptr() => _,
            inout("r2") r2.as_ptr() => _,
            in("r3") (4 * step - 4) as u32, in("r4") (8 * step - 4) as u32,
            inout("r5") k.words.as_ptr() => _, inout("r12") out.as_mut_ptr() => _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("lr") _,
            options(nostack),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    super::dw3x3_pixel(rows, step, k, out);
}

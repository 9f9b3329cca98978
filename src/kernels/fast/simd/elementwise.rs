//! The residual addition's loop on tabulated inputs ([`add_tabulated`]): per element two byte
//! loads, two table loads, a saturating addition and the output stage of [`RunScale`] with the
//! int8 clamp as one SSAT.

use super::RunScale;

/// For each `i < n = min(a.len(), b.len(), out.len())`:
/// `out[i] = k.apply(t_a[a[i] as u8].saturating_add(t_b[b[i] as u8]))` with the clamp of the
/// int8 range, `[-128, 127]` (the caller checks `(k.min, k.max)`; they are not read here).
/// With the DSP extension 13 instructions per element (two per pass of two); elsewhere the same
/// arithmetic in Rust.
#[inline(always)]
pub fn add_tabulated(tables: [&[i32; 256]; 2], a: &[i8], b: &[i8], out: &mut [i8], k: &RunScale) {
    let n = a.len().min(b.len()).min(out.len());
    let [t_a, t_b] = tables;
    // Pairs in the loop below; an odd last element after it.
    let pairs = n / 2;
    #[cfg(icefold_dsp)]
    if pairs > 0 {
        // SAFETY: the loop runs `pairs >= 1` times (SUBS/BNE on r3), reading bytes `2j` and
        // `2j + 1` of `a` (r0) and `b` (r1) and writing the same bytes of `out` (r2), each
        // pointer post-incremented by one per element, so for `j < pairs` every access is
        // below `2 · pairs <= n`, inside all three slices. The table loads index `t_a` (r4) and
        // `t_b` (r5) by a zero-extended byte (LDRB), below 256: inside both 256-word arrays.
        // Only the named registers and the flags (with Q) change; no stack; r6 and r7 are not
        // touched. LDRB, QADD, SMLAL, SSAT exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "1:",
                "ldrb r11, [r0], #1",
                "ldrb r12, [r1], #1",
                "ldr r11, [r4, r11, lsl #2]",
                "ldr r12, [r5, r12, lsl #2]",
                "qadd r11, r11, r12",
                "and r12, r11, #0x80000000",
                "orr r12, r12, #0x40000000",
                "add lr, r8, r11, asr #31",
                "smlal r12, lr, r11, r9",
                "asr lr, lr, r10",
                "ssat lr, #8, lr",
                "strb lr, [r2], #1",
                "ldrb r11, [r0], #1",
                "ldrb r12, [r1], #1",
                "ldr r11, [r4, r11, lsl #2]",
                "ldr r12, [r5, r12, lsl #2]",
                "qadd r11, r11, r12",
                "and r12, r11, #0x80000000",
                "orr r12, r12, #0x40000000",
                "add lr, r8, r11, asr #31",
                "smlal r12, lr, r11, r9",
                "asr lr, lr, r10",
                "ssat lr, #8, lr",
                "strb lr, [r2], #1",
                "subs r3, r3, #1",
                "bne 1b",
                inout("r0") a.as_ptr() => _,
                inout("r1") b.as_ptr() => _,
                inout("r2") out.as_mut_ptr() => _,
                inout("r3") pairs => _,
                in("r4") t_a.as_ptr(),
                in("r5") t_b.as_ptr(),
                in("r8") k.high,
                in("r9") k.multiplier,
                in("r10") k.shift,
                out("r11") _,
                out("r12") _,
                out("lr") _,
                options(nostack),
            );
        }
    }
    // Without the DSP extension every element here; with it, the odd last one.
    let done = if cfg!(icefold_dsp) { 2 * pairs } else { 0 };
    let rest = a.iter().zip(b).zip(out.iter_mut()).take(n).skip(done);
    for ((x, y), o) in rest {
        let sum = t_a[usize::from(*x as u8)].saturating_add(t_b[usize::from(*y as u8)]);
        *o = k.apply(sum) as i8;
    }
}

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

/// The four signed bytes of `a` and `b`, lane by lane, the larger of each (int8 max pooling:
/// [`crate::kernels::fast::pool`]). With the DSP extension SSUB8 (the lanes' differences set the
/// GE flags, the difference itself unused) and SEL (each lane from `a` where its flag is set,
/// from `b` elsewhere): two instructions for four lanes; elsewhere lane by lane in Rust.
#[inline(always)]
pub fn max_i8x4(a: u32, b: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: register-only instructions present on every icefold_dsp core (module docs of
        // `simd`). SEL reads the GE flags SSUB8 sets: both in one statement, so nothing runs
        // between them; the flags are clobbered (no `preserves_flags`).
        unsafe {
            core::arch::asm!(
                "ssub8 {r}, {a}, {b}",
                "sel {r}, {a}, {b}",
                r = out(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        let [a, b] = [a, b].map(u32::to_le_bytes);
        let lanes = core::array::from_fn(|i| {
            let (x, y) = (a[i] as i8, b[i] as i8);
            x.max(y) as u8
        });
        u32::from_le_bytes(lanes)
    }
}

/// The four signed bytes of `a` and `b`, lane by lane, the smaller of each: SSUB8 and SEL with
/// the operands of the selection swapped (see [`max_i8x4`]).
#[inline(always)]
pub fn min_i8x4(a: u32, b: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: as in `max_i8x4`: register-only instructions of every icefold_dsp core, SEL
        // reading the GE flags SSUB8 sets in the same statement; the flags are clobbered.
        unsafe {
            core::arch::asm!(
                "ssub8 {r}, {a}, {b}",
                "sel {r}, {b}, {a}",
                r = out(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        let [a, b] = [a, b].map(u32::to_le_bytes);
        let lanes = core::array::from_fn(|i| {
            let (x, y) = (a[i] as i8, b[i] as i8);
            x.min(y) as u8
        });
        u32::from_le_bytes(lanes)
    }
}

/// The lane-wise maximum ([`max_i8x4`]) of `m` and the words at byte offsets
/// `ty · row_step + tx · col_step` of `window` for `ty < rows`, `tx < cols`: one word of a max
/// pooling window's four channels over its taps. `None` (nothing read) unless every such word
/// lies inside `window`. With the DSP extension a loop of six instructions per tap (LDR, the
/// pointer step, SSUB8, SEL, count, branch) where LLVM's loop, its operands spilled, took 17.
#[inline(always)]
pub fn max_taps(
    window: &[i8],
    rows: usize,
    cols: usize,
    row_step: usize,
    col_step: usize,
    m: u32,
) -> Option<u32> {
    if rows == 0 || cols == 0 {
        return Some(m);
    }
    // The last tap's word ends inside the window: every other tap's word starts below it.
    let last = (rows - 1)
        .checked_mul(row_step)?
        .checked_add((cols - 1).checked_mul(col_step)?)?;
    window.get(last..)?.get(..4)?;
    // Offsets below `isize::MAX` (inside a slice), so the pointer steps do not wrap.
    #[cfg(icefold_dsp)]
    {
        let mut m = m;
        // SAFETY: the outer loop runs `rows >= 1` times, the inner `cols >= 1` times per row
        // (SUBS/BNE on r1 and r8); the inner loop reads the word at `window + ty · row_step +
        // tx · col_step` (r11, advanced by `col_step` after each load; r0 advanced by
        // `row_step` per row), for `ty < rows`, `tx < cols`: each at most `last`, whose word
        // was checked above to lie inside `window`. LDR of an unaligned word is allowed on
        // every icefold_dsp core (normal memory, unaligned access enabled by default). Only the
        // named registers and the flags (GE included) change; no stack.
        unsafe {
            core::arch::asm!(
                "1:",
                "mov r11, r0",
                "mov r8, r2",
                "2:",
                "ldr r9, [r11]",
                "add r11, r11, r4",
                "ssub8 r10, r5, r9",
                "sel r5, r5, r9",
                "subs r8, r8, #1",
                "bne 2b",
                "add r0, r0, r3",
                "subs r1, r1, #1",
                "bne 1b",
                inout("r0") window.as_ptr() => _,
                inout("r1") rows => _,
                in("r2") cols,
                in("r3") row_step,
                in("r4") col_step,
                inout("r5") m,
                out("r11") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                options(nostack, readonly),
            );
        }
        Some(m)
    }
    #[cfg(not(icefold_dsp))]
    {
        let mut m = m;
        for ty in 0..rows {
            for tx in 0..cols {
                let at = ty * row_step + tx * col_step;
                let q = window.get(at..)?.first_chunk::<4>()?;
                m = max_i8x4(m, u32::from_le_bytes(q.map(|v| v as u8)));
            }
        }
        Some(m)
    }
}

//! A dense layer's four rows on weights the host tool stored as int16
//! ([`DenseLayout::QuadsI16`](crate::format::DenseLayout)): no widening in the loop, one
//! activation word shared by four SMLADs.

/// One pass of [`smlad_4x1_quads`]'s loop: four activation words times sixteen weight words
/// into the accumulators r8-r11, as two of the fused pointwise tile's quarters
/// ([`smlad_4x1_pair!`]).
#[cfg(icefold_dsp)]
macro_rules! quads_pass {
    () => {
        concat!(smlad_4x1_pair!(), smlad_4x1_pair!())
    };
}

/// Four rows of a dense layer: `acc[k] + Σ_m smlad(w[4m + k], x[m])` over the `m` below
/// `min(x.len(), w.len() / 4)`, with `x` the input widened once per call
/// ([`widen_pairs`](super::widen_pairs)) and `w` the block's words in
/// [`quad_index`](crate::format::quad_index) order (per activation word the four rows' weight
/// words), so `smlad(w[4m + k], x[m])` is row `k`'s two products of that word.
///
/// With the DSP extension (`icefold_dsp`): per two activation words one LDRD, two LDMs of four
/// weight words and eight SMLADs ([`quads_pass!`], 22 instructions per four words, 32
/// products); SUBS and BNE per pass; the last `n % 4` words in Rust.
#[inline(always)]
pub fn smlad_4x1_quads(w: &[u32], x: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let n = x.len().min(w.len() / 4);
    #[allow(unused_mut)]
    let mut done = 0;
    let [mut a0, mut a1, mut a2, mut a3] = acc;
    #[cfg(icefold_dsp)]
    {
        let passes = n / 4;
        if passes > 0 {
            // SAFETY: `x` holds at least `n` words and `w` at least `4n`; each pass reads four
            // words through r12 (two LDRDs) and sixteen through r5 (four LDMs), both
            // post-incremented past what they read, `passes · 4 <= n` words in all, so every
            // load is inside its slice; both are `u32` slices, so every load is word-aligned
            // (LDM and LDRD need word alignment). r6 (LLVM's base pointer, not an operand) is
            // pushed first and popped last, so it leaves as it came; the stack is used only for
            // that word. Otherwise only the named registers and the flags change (no stores
            // besides the push): `readonly` does not hold for the push, so no options. LDRD,
            // LDM, SMLAD, PUSH, POP, SUBS and BNE exist on every icefold_dsp core.
            unsafe {
                core::arch::asm!(
                    "push {{r6}}",
                    "2:",
                    quads_pass!(),
                    "subs lr, lr, #1",
                    "bne 2b",
                    "pop {{r6}}",
                    inout("r5") w.as_ptr() => _,
                    inout("r12") x.as_ptr() => _,
                    inout("lr") passes => _,
                    inout("r8") a0,
                    inout("r9") a1,
                    inout("r10") a2,
                    inout("r11") a3,
                    out("r0") _,
                    out("r1") _,
                    out("r2") _,
                    out("r3") _,
                    out("r4") _,
                    options(),
                );
            }
            done = 4 * passes;
        }
    }
    let (w, x) = (
        w.get(4 * done..4 * n).unwrap_or_default(),
        x.get(done..n).unwrap_or_default(),
    );
    for (ws, &xw) in w.chunks_exact(4).zip(x) {
        if let Some(&[w0, w1, w2, w3]) = ws.first_chunk::<4>() {
            a0 = super::smlad(w0, xw, a0);
            a1 = super::smlad(w1, xw, a1);
            a2 = super::smlad(w2, xw, a2);
            a3 = super::smlad(w3, xw, a3);
        }
    }
    [a0, a1, a2, a3]
}

/// [`smlad_4x1_quads`] over consecutive blocks of four rows in one call: for block `b <
/// sums.len() / 4`, `sums[4b + k] = bias[4b + k] + Σ_m smlad(w[4 · x.len() · b + 4m + k], x[m])`
/// for `k < 4` and `m < x.len()`. Returns the rows done: all whole blocks, when `x.len()` is a
/// nonzero multiple of 4, `bias` has the rows and `w` the blocks' words; else 0 (nothing
/// written: the caller takes [`smlad_4x1_quads`] block by block).
///
/// With the DSP extension the blocks are the assembly's outer loop (its counters in a small
/// block on the stack, about ten instructions per block where a call per block took about 70);
/// elsewhere [`smlad_4x1_quads`] per block.
#[inline(always)]
pub fn smlad_4x1_quad_blocks(w: &[u32], x: &[u32], bias: &[i32], sums: &mut [i32]) -> usize {
    let blocks = sums.len() / 4;
    let x_len = x.len();
    if blocks == 0
        || x_len == 0
        || x_len % 4 != 0
        || bias.len() < 4 * blocks
        || w.len() / 4 / x_len < blocks
    {
        return 0;
    }
    #[cfg(icefold_dsp)]
    {
        // The outer loop's state, read and written by the assembly through the pointer it
        // keeps on the stack: bias pointer, sums pointer, blocks left, x, passes per block.
        let mut state: [usize; 5] = [
            bias.as_ptr() as usize,
            sums.as_mut_ptr() as usize,
            blocks,
            x.as_ptr() as usize,
            x_len / 4,
        ];
        // SAFETY: `blocks >= 1` blocks run (the count in `state[2]`, SUBS/BNE), each reading
        // four biases (`state[0]`, advanced by 16 bytes per block), `x_len` words of `x` from
        // its start (r12, reset per block; `x_len / 4 >= 1` passes of four words) and
        // `4 · x_len` words of `w` (r5, never reset: the blocks are consecutive in `w`), then
        // writing four sums (`state[1]`, advanced by 16 bytes). The check above: `bias` holds
        // `4 · blocks` values, `sums` at least `4 · blocks`, `w` at least `4 · x_len · blocks`
        // words, so every access is inside its slice; all are `u32`/`i32` slices, so LDM, LDRD
        // and STM are word-aligned. `state` is a live local array of five words: the
        // assembly reads and writes only those through its pointer, saved on the stack (one
        // push) with r6 (LLVM's base pointer, pushed first and popped last, so it leaves as it
        // came). Otherwise only the named registers and the flags change. LDM, STM, LDRD,
        // SMLAD, PUSH, POP, STR, SUBS, BNE exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "push {{r6}}",
                "push {{r0}}",
                "3:",
                "ldr r0, [sp]",
                "ldm r0, {{r1, r2, r3, r12, lr}}",
                "ldm r1!, {{r8, r9, r10, r11}}",
                "str r1, [r0]",
                "2:",
                quads_pass!(),
                "subs lr, lr, #1",
                "bne 2b",
                "ldr r0, [sp]",
                "ldm r0, {{r1, r2, r3}}",
                "stm r2!, {{r8, r9, r10, r11}}",
                "str r2, [r0, #4]",
                "subs r3, r3, #1",
                "str r3, [r0, #8]",
                "bne 3b",
                "pop {{r0}}",
                "pop {{r6}}",
                inout("r0") state.as_mut_ptr() => _,
                inout("r5") w.as_ptr() => _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                out("r4") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                out("r12") _,
                out("lr") _,
                options(),
            );
        }
        let _ = state;
    }
    #[cfg(not(icefold_dsp))]
    for ((s4, b4), wb) in sums
        .chunks_exact_mut(4)
        .zip(bias.chunks_exact(4))
        .zip(w.chunks_exact(4 * x_len))
        .take(blocks)
    {
        if let (Some(s4), Some(&[b0, b1, b2, b3])) = (s4.first_chunk_mut::<4>(), b4.first_chunk()) {
            *s4 = smlad_4x1_quads(wb, x, [b0, b1, b2, b3]);
        }
    }
    4 * blocks
}

/// The per-layer constants of [`stage_rows_i8`] and [`stage_rows_i16`].
#[derive(Clone, Copy, Debug)]
pub struct RowsConstants {
    /// `1 + 2 · zero_point`: with a right shift `r`, the rounding constant's high word plus the
    /// zero point is `(1 + 2 · zero_point) · 2^(r−2)`.
    pub rounding: i32,
    /// The largest `r − 1` taken (1 to 30; 0 takes none): the caller's bound for the zero
    /// point's share, `|zero_point| · 2^(r−1) <= 2^29`.
    pub max_shift: u32,
    /// The lower clamp, at least the output type's minimum (the upper clamp is its maximum).
    pub min: i32,
}

/// Generates a stage loop storing through `$store` and saturating to `$bits`.
macro_rules! stage_rows {
    ($name:ident, $t:ty, $store:literal, $bits:literal, $size:literal) => {
        /// The output stage of a dense layer's leading rows, each with its own factor, for rows
        /// whose multiplier is positive and whose shift `s` is `−(r)` with `1 <= r − 1 <=
        /// k.max_shift`: `out[o] = sat(max(v, k.min))`, saturated to the output type, where
        /// `v = ((H · 2^32 + L) + x · m) >> 32 >> (r − 1)` with `H = k.rounding · 2^(r−2) +
        /// (x >> 31)` and `L = (x & 2^31) | 2^30` ([`RunScale::apply`](super::RunScale::apply)'s
        /// arithmetic, the zero point in `H`). Returns the rows done: it stops before the
        /// first row of another form (the caller computes that one).
        ///
        /// With the DSP extension 22 instructions per row; elsewhere the same arithmetic in
        /// Rust.
        #[inline(always)]
        pub fn $name(
            sums: &[i32],
            multiplier: &[i32],
            shift: &[i32],
            out: &mut [$t],
            k: &RowsConstants,
        ) -> usize {
            let n = sums.len().min(multiplier.len()).min(shift.len()).min(out.len());
            #[cfg(icefold_dsp)]
            if n > 0 {
                let left: usize;
                // SAFETY: the loop runs at most `n >= 1` times (SUBS/BNE on r11, which starts
                // at `n`), each pass reading one word of `multiplier` (r8), `shift` (r9) and
                // `sums` (r5) and writing one element of `out` (r10), each pointer
                // post-incremented past it, so every access of pass `j < n` is inside its
                // slice (all hold at least `n` elements; the slices are `i32` and `$t`, so
                // the loads and the store are aligned). A pass that exits early stores
                // nothing. r6 (LLVM's base pointer, here the clamp) is pushed first and
                // popped last, so it leaves as it came; the stack holds only that word.
                // Only the named registers and the flags change. LDR, SMLAL, SSAT, IT, PUSH
                // and POP exist on every icefold_dsp core.
                unsafe {
                    core::arch::asm!(
                        "push {{r6}}",
                        "mov r6, r0",
                        "1:",
                        "ldr r1, [r8], #4",
                        "ldr r2, [r9], #4",
                        "cmp r1, #0",
                        "ble 2f",
                        // r0 = r − 1 = −s − 1; taken while 1 <= r − 1 <= max_shift.
                        "mvn r0, r2",
                        "sub r3, r0, #1",
                        "cmp r3, lr",
                        "bhs 2f",
                        "lsl r3, r12, r3",
                        "ldr r2, [r5], #4",
                        "add r3, r3, r2, asr #31",
                        "and r4, r2, #0x80000000",
                        "orr r4, r4, #0x40000000",
                        "smlal r4, r3, r2, r1",
                        "asr r3, r3, r0",
                        "cmp r3, r6",
                        "it lt",
                        "movlt r3, r6",
                        concat!("ssat r3, #", $bits, ", r3"),
                        concat!($store, " r3, [r10], #", $size),
                        "subs r11, r11, #1",
                        "bne 1b",
                        "2:",
                        "pop {{r6}}",
                        inout("r0") k.min => _,
                        out("r1") _,
                        out("r2") _,
                        out("r3") _,
                        out("r4") _,
                        inout("r5") sums.as_ptr() => _,
                        inout("r8") multiplier.as_ptr() => _,
                        inout("r9") shift.as_ptr() => _,
                        inout("r10") out.as_mut_ptr() => _,
                        inout("r11") n => left,
                        in("r12") k.rounding,
                        in("lr") k.max_shift,
                        options(),
                    );
                }
                return n - left;
            }
            // Elsewhere (the host tests among them) the same arithmetic in Rust.
            let rows = sums.iter().zip(multiplier).zip(shift).zip(out.iter_mut());
            for (done, (((&x, &m), &s), y)) in rows.enumerate() {
                let r1 = !s as u32;
                if m <= 0 || r1.wrapping_sub(1) >= k.max_shift {
                    return done;
                }
                let high = (k.rounding << (r1 - 1)).wrapping_add(x >> 31);
                let low = (x as u32 & 0x8000_0000) | 0x4000_0000;
                let q = ((i64::from(high) << 32) | i64::from(low))
                    .wrapping_add(i64::from(x) * i64::from(m));
                let v = (((q >> 32) as i32) >> r1).max(k.min);
                *y = v.clamp(<$t>::MIN.into(), <$t>::MAX.into()) as $t;
            }
            n
        }
    };
}

stage_rows!(stage_rows_i8, i8, "strb", "8", "1");
stage_rows!(stage_rows_i16, i16, "strh", "16", "2");

/// One pass of [`pair_sums`]' loop over two activation words (four inputs) of two pairs of
/// rows: per pair an LDRD of its two words, then per word the SMLAD of the word as stored
/// (both rows, the second's times 256) and the SMLAD of its SXTB16 (the first row alone).
/// Registers: r12 the activations, r5 and r6 the two pairs' words, r0-r1 the activation words,
/// r2-r3 the weight words, r4 the widened lanes, r8-r11 the sums (a, b of each pair).
#[cfg(icefold_dsp)]
macro_rules! pairs_pass {
    () => {
        concat!(
            "ldrd r0, r1, [r12], #8\n",
            "ldrd r2, r3, [r5], #8\n",
            "smlad r8, r2, r0, r8\n",
            "sxtb16 r4, r2\n",
            "smlad r9, r4, r0, r9\n",
            "smlad r8, r3, r1, r8\n",
            "sxtb16 r4, r3\n",
            "smlad r9, r4, r1, r9\n",
            "ldrd r2, r3, [r6], #8\n",
            "smlad r10, r2, r0, r10\n",
            "sxtb16 r4, r2\n",
            "smlad r11, r4, r0, r11\n",
            "smlad r10, r3, r1, r10\n",
            "sxtb16 r4, r3\n",
            "smlad r11, r4, r1, r11\n",
        )
    };
}

/// The sums of a dense layer's rows stored in pairs
/// ([`DenseLayout::PairsI8`](crate::format::DenseLayout)): for pair `k < sums.len() / 2`
/// (its words `w[k · x.len() ..][.. x.len()]`), `sums[2k] = Σ_m smlad(w_m, x[m])` (each word
/// as stored: `256 ·` the second row's products plus the first's, wrapping) and `sums[2k + 1] =
/// Σ_m smlad(sxtb16(w_m), x[m])` (the first row's), with `x` the input in natural lane order
/// (`(x[2m], x[2m + 1])`). Returns the pairs done: every pair when `x.len()` is a nonzero
/// multiple of 4 and `w` holds them; else 0 (nothing written).
///
/// With the DSP extension two pairs per block of the assembly's outer loop (its state in a small
/// block on the stack), per four activation words 30 instructions for 32 products
/// ([`pairs_pass!`] twice), SUBS/BNE per pass; a last odd pair, and every pair elsewhere, in
/// Rust.
#[inline(always)]
pub fn pair_sums(w: &[u32], x: &[u32], sums: &mut [i32]) -> usize {
    let pairs = sums.len() / 2;
    let x_len = x.len();
    if pairs == 0 || x_len == 0 || x_len % 4 != 0 || w.len() / x_len < pairs {
        return 0;
    }
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(icefold_dsp)]
    {
        let blocks = pairs / 2;
        if blocks > 0 {
            // The outer loop's state, read and written through the pointer the assembly keeps
            // on the stack: sums pointer, blocks left, x, passes per block, a pair's bytes.
            let mut state: [usize; 5] = [
                sums.as_mut_ptr() as usize,
                blocks,
                x.as_ptr() as usize,
                x_len / 4,
                4 * x_len,
            ];
            // SAFETY: `blocks >= 1` blocks run (the count in `state[1]`, SUBS/BNE), each reading
            // `x_len` words of `x` from its start (r12, reset per block; `x_len / 4 >= 1` passes
            // of four words) and the `x_len` words of each of its two pairs (r5 from the block's
            // first pair, r6 = r5 + 4 · x_len bytes; after the passes r6 is at the next block's
            // first pair, which becomes r5), then writing four sums (`state[0]`, advanced by 16
            // bytes). Checked above: `w` holds `pairs · x_len >= 2 · blocks · x_len` words and
            // `sums` `2 · pairs >= 4 · blocks` values, so every access is inside its slice; all
            // are `u32`/`i32` slices, so LDRD, LDM and STM are word-aligned. `state` is a live
            // local array of five words: the assembly reads and writes only those through its
            // pointer, saved on the stack (one push) with r6 (LLVM's base pointer, pushed first
            // and popped last, so it leaves as it came). Otherwise only the named registers and
            // the flags change. LDR, LDRD, LDM, STM, SMLAD, SXTB16, ADD, MOV, MOVS, PUSH, POP,
            // SUBS, BNE exist on every icefold_dsp core.
            unsafe {
                core::arch::asm!(
                    "push {{r6}}",
                    "push {{r0}}",
                    "3:",
                    "ldr r4, [sp]",
                    "ldr r12, [r4, #8]",
                    "ldr lr, [r4, #12]",
                    "ldr r0, [r4, #16]",
                    "add r6, r5, r0",
                    "movs r8, #0",
                    "movs r9, #0",
                    "movs r10, #0",
                    "movs r11, #0",
                    "2:",
                    pairs_pass!(),
                    pairs_pass!(),
                    "subs lr, lr, #1",
                    "bne 2b",
                    "ldr r4, [sp]",
                    "ldm r4, {{r0, r1}}",
                    "stm r0!, {{r8, r9, r10, r11}}",
                    "mov r5, r6",
                    "subs r1, r1, #1",
                    "stm r4, {{r0, r1}}",
                    "bne 3b",
                    "pop {{r0}}",
                    "pop {{r6}}",
                    inout("r0") state.as_mut_ptr() => _,
                    inout("r5") w.as_ptr() => _,
                    out("r1") _,
                    out("r2") _,
                    out("r3") _,
                    out("r4") _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                    out("r12") _,
                    out("lr") _,
                    options(),
                );
            }
            let _ = state;
            done = 2 * blocks;
        }
    }
    for (k, s) in sums.chunks_exact_mut(2).enumerate().take(pairs).skip(done) {
        let words = w.get(k * x_len..(k + 1) * x_len).unwrap_or_default();
        let (mut a, mut b) = (0i32, 0i32);
        for (&wm, &xm) in words.iter().zip(x) {
            a = super::smlad(wm, xm, a);
            b = super::smlad(super::sxtb16(wm), xm, b);
        }
        s[0] = a;
        s[1] = b;
    }
    pairs
}

/// One position's sums of a pair of rows stored as
/// [`DenseLayout::PairsI8`](crate::format::DenseLayout) (`bytes`, `2 · x.len()` of them) added to
/// `(a, b)`: `a` the products of each 16-bit lane as stored (`256 ·` the second row's weight plus
/// the first's), wrapping, and `b` the first row's alone. Inputs in fours (the layout's rule;
/// any others are left out).
///
/// On Thumb-2 cores (`icefold_thumb2`) one assembly loop: per four inputs an LDR of them and an
/// LDRD of both rows' weights, each value by one SXTB/SXTH/SBFX/ASR and eight MLAs, 25
/// instructions per 16 products (LLVM unrolled the same loop in Rust twice and spilled, 2.3 per
/// product on an M3, and the int8 rows take about 4.4). Elsewhere the same in Rust.
#[inline(never)]
pub fn pair_dot(bytes: &[i8], x: &[i8], (mut a, mut b): (i32, i32)) -> (i32, i32) {
    let quads = (x.len() / 4).min(bytes.len() / 8);
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(icefold_thumb2)]
    if quads > 0 {
        // SAFETY: `quads >= 1` passes (SUBS/BNE on the count), each reading one word of `x`
        // (post-incremented by 4) and two of `bytes` (LDRD, post-incremented by 8): `4 · quads <=
        // x.len()` and `8 · quads <= bytes.len()` bytes, inside both slices. LDR and LDRD of
        // unaligned addresses: LDR is allowed unaligned on every Thumb-2 core (unaligned
        // access is not trapped by default, and `x` is an i8 slice); LDRD is not, and the
        // loader keeps the weights span 4-aligned (`DenseLayout::PairsI8`), checked below.
        // Only the named registers and the flags change; no memory is written. SBFX, SXTB,
        // SXTH, ASR, MLA, LDRD, SUBS and BNE exist on every icefold_thumb2 core.
        if bytes.as_ptr() as usize % 4 == 0 {
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldr {xw}, [{xp}], #4",
                    "ldrd {w0}, {w1}, [{wp}], #8",
                    "sxtb {xv}, {xw}",
                    "sxth {t}, {w0}",
                    "mla {a}, {t}, {xv}, {a}",
                    "sxtb {t}, {w0}",
                    "mla {b}, {t}, {xv}, {b}",
                    "sbfx {xv}, {xw}, #8, #8",
                    "asr {t}, {w0}, #16",
                    "mla {a}, {t}, {xv}, {a}",
                    "sbfx {t}, {w0}, #16, #8",
                    "mla {b}, {t}, {xv}, {b}",
                    "sbfx {xv}, {xw}, #16, #8",
                    "sxth {t}, {w1}",
                    "mla {a}, {t}, {xv}, {a}",
                    "sxtb {t}, {w1}",
                    "mla {b}, {t}, {xv}, {b}",
                    "asr {xv}, {xw}, #24",
                    "asr {t}, {w1}, #16",
                    "mla {a}, {t}, {xv}, {a}",
                    "sbfx {t}, {w1}, #16, #8",
                    "mla {b}, {t}, {xv}, {b}",
                    "subs {n}, {n}, #1",
                    "bne 2b",
                    xp = inout(reg) x.as_ptr() => _,
                    wp = inout(reg) bytes.as_ptr() => _,
                    n = inout(reg) quads => _,
                    a = inout(reg) a,
                    b = inout(reg) b,
                    xw = out(reg) _,
                    w0 = out(reg) _,
                    w1 = out(reg) _,
                    xv = out(reg) _,
                    t = out(reg) _,
                    options(readonly, nostack),
                );
            }
            done = quads;
        }
    }
    let word = |v: &[i8; 4]| i32::from_le_bytes(v.map(|v| v as u8));
    for (w, x) in bytes
        .chunks_exact(8)
        .zip(x.chunks_exact(4))
        .take(quads)
        .skip(done)
    {
        let (Some((w0, w1)), Some(x)) = (w.split_first_chunk::<4>(), x.first_chunk::<4>()) else {
            continue;
        };
        let (Some(w1), x) = (w1.first_chunk::<4>(), word(x)) else {
            continue;
        };
        let (w0, w1) = (word(w0), word(w1));
        let (x0, x1, x2, x3) = ((x << 24) >> 24, (x << 16) >> 24, (x << 8) >> 24, x >> 24);
        a = a
            .wrapping_add(((w0 << 16) >> 16).wrapping_mul(x0))
            .wrapping_add((w0 >> 16).wrapping_mul(x1))
            .wrapping_add(((w1 << 16) >> 16).wrapping_mul(x2))
            .wrapping_add((w1 >> 16).wrapping_mul(x3));
        b = b
            .wrapping_add(((w0 << 24) >> 24) * x0)
            .wrapping_add(((w0 << 8) >> 24) * x1)
            .wrapping_add(((w1 << 24) >> 24) * x2)
            .wrapping_add(((w1 << 8) >> 24) * x3);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against the definition, every remainder of words after the passes.
        #[test]
        fn equals_definition(words in 0usize..40, w in proptest::collection::vec(any::<u32>(), 160),
                             x in proptest::collection::vec(any::<u32>(), 40), acc in any::<[i32; 4]>()) {
            let (w, x) = (&w[..4 * words], &x[..words]);
            let mut want = acc;
            for (m, &xw) in x.iter().enumerate() {
                for (k, a) in want.iter_mut().enumerate() {
                    *a = crate::kernels::fast::simd::smlad(w[4 * m + k], xw, *a);
                }
            }
            prop_assert_eq!(smlad_4x1_quads(w, x, acc), want);
        }

        /// The blocks in one call against one call per block, or nothing done where the
        /// input's words do not come in fours (the caller then goes block by block).
        #[test]
        fn quad_blocks_equal_one_call_per_block(rows in 0usize..30, words in 0usize..20,
                                                seed in any::<u64>()) {
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u32
            };
            let w: std::vec::Vec<u32> = (0..4 * words * rows.div_ceil(4)).map(|_| next()).collect();
            let x: std::vec::Vec<u32> = (0..words).map(|_| next()).collect();
            let bias: std::vec::Vec<i32> = (0..rows).map(|_| next() as i32 >> 8).collect();
            let mut sums = std::vec![0i32; rows];
            let done = smlad_4x1_quad_blocks(&w, &x, &bias, &mut sums);
            if words == 0 || words % 4 != 0 {
                prop_assert_eq!(done, 0);
                prop_assert!(sums.iter().all(|&s| s == 0));
            } else {
                prop_assert_eq!(done, rows / 4 * 4);
                for b in 0..rows / 4 {
                    let want = smlad_4x1_quads(&w[4 * words * b..], &x,
                        [bias[4 * b], bias[4 * b + 1], bias[4 * b + 2], bias[4 * b + 3]]);
                    prop_assert_eq!(&sums[4 * b..4 * b + 4], &want[..]);
                }
                prop_assert!(sums[done..].iter().all(|&s| s == 0));
            }
        }
    }
}

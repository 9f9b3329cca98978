//! The depthwise 3x3 pixel loop ([`super::dw3x3_pixel`]) for layers whose clamp is `[0,
//! 32767]` (ReLU on int16 outputs with a zero point of 0, every DS-CNN and MobileNet depthwise
//! layer): the clamp as one USAT per lane instead of two compares with their ITs and moves; and
//! the same for two adjacent output pixels per pass ([`dw3x3_pixel2_relu16`]).
//!
//! These passes and [`requant_pairs_relu16`] drop the sign terms of
//! [`super::requant_run`]'s rounding for output zero points `z <= 0` (the caller checks): with
//! the sum `x`, the factor `m >= 1` and the right shift `s >= 1`, `requant_run` takes the high
//! word of `Q = h · 2^32 + 2^30 − [x < 0] · 2^31 + x · m`, where `h = 2^(s − 1) + z · 2^s`
//! ([`super::RunScale`]: `Scale::run`), shifted right by `s`. These passes take
//! `Q' = h · 2^32 + 2^30 + x · m` instead. For `x >= 0` it is `Q`. For `x < 0`, `x · m <= −1`
//! and `h <= 2^(s − 1)`, so `Q <= Q' < 2^(31 + s) + 2^30 < 2^(32 + s)`: both results are at
//! most 0, which the clamp `[0, 32767]` makes 0. Two instructions fewer per output (the AND
//! and ORR of the low word, the ADD of the high word's sign; a MOV of the constant low word
//! instead).
//!
//! The pixel passes ([`dw3x3_pixel_relu16`], [`dw3x3_pixel2_relu16`]) then form `Q'`'s high word
//! in one SMMLAR (`⌊(a · 2^32 + b · c + 2^31) / 2^32⌋`, 1 cycle) where `requant_run` needs two
//! MOVs and an SMLAL: on constants in a doubled form ([`DwPixelParams::set_taps_doubled`]: taps
//! and bias doubled, so the sum is `2x`; `high` doubled; the shift one more) they take `R = ⌊(2h
//! · 2^32 + 2x · m + 2^31) / 2^32⌋` and `R >> (s + 1)`, which is `⌊(2h · 2^32 + 2x · m + 2^31) /
//! 2^(33 + s)⌋ = ⌊Q' / 2^(32 + s)⌋` (nested floor divisions by powers of two; both sides times
//! two), the same value as above, provided nothing wraps: `2x` fits 32 bits and so does `R`
//! (`|2h| + |2x · m| / 2^32 + 1 < 2^31`). `set_taps_doubled` checks both for any sum of nine
//! int8 taps on int16 inputs and refuses the channel otherwise. Two instructions fewer per
//! output again (the two-pixel pass: 84 → 75 per four outputs, the bias pair loaded twice by one
//! LDM instead of an LDRD and two MOVs).

use super::DwPixelParams;
#[cfg(not(icefold_dsp))]
use super::RunScale;

/// [`super::dw3x3_pixel`] for parameters whose clamp is `[0, 32767]` and whose output zero
/// points are at most 0, on constants in the doubled form ([`DwPixelParams::set_taps_doubled`],
/// the caller checks both): the same results (the module documentation says why). With the DSP
/// extension 46 instructions per channel pair where [`super::dw3x3_pixel`] takes 67 (the last
/// shift and `more` in one LDRD).
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
        // SAFETY: as `dw3x3_pixel`'s (the same loads, stores and loop; the doubled biases'
        // second copy is stepped over). The check above. Pair `j` (the loop runs
        // exactly `n = k.pairs` times: the `more` words of `DwPixelParams` (word 23 of each
        // pair in every form), private to `simd`, are nonzero for `j < n − 1`
        // and zero for `j = n − 1`) reads words `j`, `j + step` and `j + 2 · step` of each row
        // (r0..r2 advance one word per pair after the first load; r3, r4 are the other two
        // taps' byte offsets less that word), all below `2 · step + n <= len`; it reads words 4
        // to 23 of pair `j` of `k.words` (r5 starts at word 4 and advances 96 bytes per pair,
        // `n <= DW_PIXEL_PAIRS`)
        // and writes word `j` of `out` (`n <= out.len()`). No stack; only the named registers
        // and the flags (with Q) change. LDRD, SMLABB, SMLATT, SMMLAR, USAT, PKHBT exist on
        // every icefold_dsp core; r6 and r7 (LLVM's base and frame pointers) are not touched.
        unsafe {
            core::arch::asm!(
            "1:",
            "ldrd r8, r9, [r5], #16",
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
            // output stage, lane 0: the doubled sum's rounded high word (SMMLAR, the module
            // documentation), shifted right by `shift + 1`
            "ldrd r11, lr, [r5], #8",
            "smmlar r8, r8, lr, r11",
            "ldr lr, [r5], #4",
            "asr r8, r8, lr",
            // lane 1
            "ldrd r11, lr, [r5], #8",
            "smmlar r9, r9, lr, r11",
            // with `more` (word 23), and on to the next pair's word 4
            "ldrd lr, r10, [r5], #24",
            "asr r9, r9, lr",
            // clamp to [0, 32767]
            "usat r8, #15, r8",
            "usat r9, #15, r9",
            "pkhbt r8, r8, r9, lsl #16",
            "str r8, [r12], #4",
            "cmp r10, #0",
            "bne 1b",
            inout("r0") r0.as_ptr() => _, inout("r1") r1.as_ptr() => _,
            inout("r2") r2.as_ptr() => _,
            in("r3") (4 * step - 4) as u32, in("r4") (8 * step - 4) as u32,
            inout("r5") k.words.as_ptr().wrapping_add(super::DW_PIXEL_SKIP) => _,
            inout("r12") out.as_mut_ptr() => _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("lr") _,
            options(nostack),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    pixel_doubled(rows, step, k, out);
}

/// The relu16 passes' arithmetic in plain Rust, instruction for instruction (the host's twin
/// of their assembly, which the property tests run against the reference): pair `j`'s doubled
/// sums from `rows` (columns `step` words apart), each lane's SMMLAR, shift and USAT.
#[cfg(not(icefold_dsp))]
fn pixel_doubled(rows: [&[u32]; 3], step: usize, k: &DwPixelParams, out: &mut [u32]) {
    let words = k.words.chunks_exact(super::DW_PIXEL_WORDS).take(k.pairs);
    for (j, (p, y)) in words.zip(out.iter_mut()).enumerate() {
        let Some(p) = p
            .get(super::DW_PIXEL_SKIP..)
            .and_then(|p| p.first_chunk::<{ super::DW_PIXEL_WORDS - super::DW_PIXEL_SKIP }>())
        else {
            return;
        };
        let mut acc = [p[0] as i32, p[1] as i32];
        for t in 0..9 {
            let x = rows[t / 3].get(t % 3 * step + j).copied().unwrap_or(0);
            acc = super::smla_lanes(p[4 + t], x, acc);
        }
        *y = doubled_stage(acc[0], [p[13], p[14], p[15]])
            | doubled_stage(acc[1], [p[16], p[17], p[18]]) << 16;
    }
}

/// One lane's doubled output stage, as the assembly computes it: SMMLAR (bits 63..32 of
/// `high · 2^32 + x · multiplier + 2^31`, modulo 2^64), ASR by `shift` (below 32:
/// [`DwPixelParams::set_taps_doubled`]) and USAT to `[0, 32767]`.
#[cfg(not(icefold_dsp))]
fn doubled_stage(x: i32, [high, multiplier, shift]: [u32; 3]) -> u32 {
    let q = (i64::from(high as i32) << 32)
        .wrapping_add(i64::from(x) * i64::from(multiplier as i32))
        .wrapping_add(1 << 31);
    (((q >> 32) as i32) >> shift.min(31)).clamp(0, 32767) as u32
}

/// `pairs` pairs of horizontally adjacent output pixels along a row of a depthwise 3x3
/// convolution with the clamp `[0, 32767]` ([`dw3x3_pixel_relu16`]'s results for each): in
/// pair `p`, pixel A's window starts at column `2p · S` of `rows`, pixel B's `S` columns later
/// (`S`, the horizontal stride, 1 or 2); a column is `COL` words (at least `k.pairs()`:
/// channel pair `j` of column `c` is word `c · COL + j`). Pair `j`'s results go to `out[2p ·
/// b_at + j]` (A) and `out[(2p + 1) · b_at + j]` (B). Nothing is done unless `pairs >= 1`,
/// every row holds `2 (pairs − 1) · S · COL + (S + 2) · COL + k.pairs()` words, `b_at >=
/// k.pairs()` and `out` holds `(2 pairs − 1) · b_at + k.pairs()`. The results are
/// [`dw3x3_pixel_relu16`]'s where every channel's output zero point is at most 0 (the caller
/// checks: the module documentation says why).
///
/// `k` holds the doubled form ([`DwPixelParams::set_taps_doubled`]).
///
/// With the DSP extension the two windows share every weight load (one LDM per kernel row),
/// the column both windows read (stride 1: two of four per row, stride 2: one of five), the
/// biases (one LDM of both copies) and the output stages' constants: 74 instructions for four
/// outputs (stride 2: 77) where two passes of [`dw3x3_pixel_relu16`] take 92. The column offsets are immediates
/// (`COL` is a constant), which frees the registers the two extra accumulators need. The
/// pixel pairs are a loop of the assembly too (11 instructions per pair, its counters on the
/// stack): a call per pair from Rust cost about 70.
#[inline(always)]
pub fn dw3x3_pixel2_relu16<const S: usize, const COL: usize>(
    rows: [&[u32]; 3],
    k: &DwPixelParams,
    out: &mut [u32],
    b_at: usize,
    pairs: usize,
) {
    let n = k.pairs;
    let need = pairs
        .wrapping_sub(1)
        .wrapping_mul(2 * S * COL)
        .wrapping_add((S + 2) * COL + n);
    if !(S == 1 || S == 2)
        || n == 0
        || n > COL
        || COL > 64
        || pairs == 0
        || pairs > 1 << 16
        || b_at < n
        || b_at > 1 << 20
        || out.len() < (2 * pairs - 1) * b_at + n
        || rows.iter().any(|r| r.len() < need)
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let [r0, r1, r2] = rows;
        // The kernel row of both windows (r9, r10, lr: its three weights; r8: the input word;
        // r3/r4 pixel A's lanes, r6/r7 pixel B's). `$r` advances one word (the next pair).
        macro_rules! row {
            (1, $r:literal) => {
                concat!(
                    "ldm r5!, {{r9, r10, lr}}\n",
                    "ldr r8, [",
                    $r,
                    "], #4\n",
                    "smlabb r3, r9, r8, r3\n",
                    "smlatt r4, r9, r8, r4\n",
                    "ldr r8, [",
                    $r,
                    ", #{c1}]\n",
                    "smlabb r3, r10, r8, r3\n",
                    "smlatt r4, r10, r8, r4\n",
                    "smlabb r6, r9, r8, r6\n",
                    "smlatt r7, r9, r8, r7\n",
                    "ldr r8, [",
                    $r,
                    ", #{c2}]\n",
                    "smlabb r3, lr, r8, r3\n",
                    "smlatt r4, lr, r8, r4\n",
                    "smlabb r6, r10, r8, r6\n",
                    "smlatt r7, r10, r8, r7\n",
                    "ldr r8, [",
                    $r,
                    ", #{c3}]\n",
                    "smlabb r6, lr, r8, r6\n",
                    "smlatt r7, lr, r8, r7\n",
                )
            };
            (2, $r:literal) => {
                concat!(
                    "ldm r5!, {{r9, r10, lr}}\n",
                    "ldr r8, [",
                    $r,
                    "], #4\n",
                    "smlabb r3, r9, r8, r3\n",
                    "smlatt r4, r9, r8, r4\n",
                    "ldr r8, [",
                    $r,
                    ", #{c1}]\n",
                    "smlabb r3, r10, r8, r3\n",
                    "smlatt r4, r10, r8, r4\n",
                    "ldr r8, [",
                    $r,
                    ", #{c2}]\n",
                    "smlabb r3, lr, r8, r3\n",
                    "smlatt r4, lr, r8, r4\n",
                    "smlabb r6, r9, r8, r6\n",
                    "smlatt r7, r9, r8, r7\n",
                    "ldr r8, [",
                    $r,
                    ", #{c3}]\n",
                    "smlabb r6, r10, r8, r6\n",
                    "smlatt r7, r10, r8, r7\n",
                    "ldr r8, [",
                    $r,
                    ", #{c4}]\n",
                    "smlabb r6, lr, r8, r6\n",
                    "smlatt r7, lr, r8, r7\n",
                )
            };
        }
        // One lane's output stage for both pixels: `$a`, `$b` the two doubled sums, the
        // lane's doubled `high`, `multiplier` and `shift + 1` at r5 (which steps over them):
        // SMMLAR's rounded high word of `high · 2^32 + x · multiplier`, shifted right (the
        // module documentation: `requant_run`'s results after the clamp `[0, 32767]`).
        macro_rules! stage {
            ($a:literal, $b:literal, $shift:literal) => {
                concat!(
                    "ldrd r9, r10, [r5], #8\n",
                    "smmlar ",
                    $a,
                    ", ",
                    $a,
                    ", r10, r9\n",
                    "smmlar ",
                    $b,
                    ", ",
                    $b,
                    ", r10, r9\n",
                    $shift,
                    "\n",
                    "asr ",
                    $a,
                    ", ",
                    $a,
                    ", r10\n",
                    "asr ",
                    $b,
                    ", ",
                    $b,
                    ", r10\n",
                )
            };
        }
        macro_rules! pass {
            ($s:tt, $($last:tt)*) => {
                // SAFETY: the check above. Pixel pair `p < pairs` (the outer loop counts
                // `pairs >= 1` down on the stack), channel pair `j` (the inner loop runs
                // exactly `n = k.pairs` times: the `more` words of `DwPixelParams`, private to
                // `simd`, are nonzero for `j < n − 1` and zero for `j = n − 1`) reads words
                // `2p · S · COL + j + c · COL`, `c <= S + 2`, of each row (r0..r2 advance one
                // word per channel pair after the first load, the immediates are `c · COL`
                // words less that word; after the inner loop they advance `2 · S · COL − n`
                // words more, `r3` below), all below `2 (pairs − 1) · S · COL + (S + 2) · COL
                // + n <= len`; it reads words 4 to 23 of pair `j` of `k.words` (r5 starts at
                // word 4, advances 96 bytes per pair, `n <= DW_PIXEL_PAIRS`, and is reset from
                // the stack per pixel pair) and writes words `2p · b_at + j` and `(2p + 1) · b_at + j` of `out`
                // (r12 advances one word per channel pair, then `2 · b_at − n` words, `r4`;
                // r11 = 4 · b_at; `(2 pairs − 1) · b_at + n <= out.len()`). r6 and r7 (LLVM's
                // base and frame pointers, not operands) are pushed first and popped last, and
                // the four words of the outer loop (k.words, both steps, the count) are below
                // them: 24 bytes of stack below `sp`, restored. Only the named registers and
                // the flags (with Q) change. LDM, LDRD, STRD, SMLABB, SMLATT, SMLAL, USAT,
                // PKHBT exist on every icefold_dsp core.
                unsafe {
                    core::arch::asm!(
                    "push {{r6, r7}}",
                    "sub sp, sp, #16",
                    "str r5, [sp]",
                    "strd r3, r4, [sp, #4]",
                    "str r8, [sp, #12]",
                    "2:",
                    "1:",
                    // Both pixels' doubled biases (the form keeps two copies).
                    "ldm r5!, {{r3, r4, r6, r7}}",
                    row!($s, "r0"),
                    row!($s, "r1"),
                    row!($s, "r2"),
                    stage!("r3", "r6", "ldr r10, [r5], #4"),
                    // with `more` (word 23), and on to the next pair's word 4
                    stage!("r4", "r7", "ldrd r10, r8, [r5], #24"),
                    "usat r3, #15, r3",
                    "usat r4, #15, r4",
                    "usat r6, #15, r6",
                    "usat r7, #15, r7",
                    "pkhbt r3, r3, r4, lsl #16",
                    "pkhbt r6, r6, r7, lsl #16",
                    "str r6, [r12, r11]",
                    "str r3, [r12], #4",
                    "cmp r8, #0",
                    "bne 1b",
                    // The next pixel pair: rows `2 · S` columns on, outputs `2 · b_at` words.
                    "ldrd r8, r9, [sp, #4]",
                    "add r0, r0, r8",
                    "add r1, r1, r8",
                    "add r2, r2, r8",
                    "add r12, r12, r9",
                    "ldr r5, [sp]",
                    "ldr r8, [sp, #12]",
                    "subs r8, r8, #1",
                    "str r8, [sp, #12]",
                    "bne 2b",
                    "add sp, sp, #16",
                    "pop {{r6, r7}}",
                    c1 = const 4 * COL - 4,
                    c2 = const 8 * COL - 4,
                    c3 = const 12 * COL - 4,
                    $($last)*
                    inout("r0") r0.as_ptr() => _, inout("r1") r1.as_ptr() => _,
                    inout("r2") r2.as_ptr() => _,
                    inout("r5") k.words.as_ptr().wrapping_add(super::DW_PIXEL_SKIP) => _,
                    inout("r12") out.as_mut_ptr() => _,
                    in("r11") (4 * b_at) as u32,
                    inout("r3") (8 * S * COL - 4 * n) as u32 => _,
                    inout("r4") (8 * b_at - 4 * n) as u32 => _,
                    inout("r8") pairs as u32 => _,
                    out("r9") _, out("r10") _, out("lr") _,
                    );
                }
            };
        }
        if S == 1 {
            pass!(1,);
        } else {
            pass!(2, c4 = const 16 * COL - 4,);
        }
    }
    #[cfg(not(icefold_dsp))]
    for p in 0..pairs {
        let Some(out) = out.get_mut(2 * p * b_at..) else {
            return;
        };
        let (a, b) = out.split_at_mut(b_at);
        let left = 2 * p * S * COL;
        pixel_doubled(rows.map(|r| r.get(left..).unwrap_or_default()), COL, k, a);
        let shifted = rows.map(|r| r.get(left + S * COL..).unwrap_or_default());
        pixel_doubled(shifted, COL, k, b);
    }
}

/// The output stage of `n` pixels of one channel pair, both lanes fused, with the clamp `[0,
/// 32767]` (`runs`' clamps are not read: the caller checks): pixel `i`'s sums are `accs[2i]`
/// (even channel) and `accs[2i + 1]`, each goes through its lane's [`RunScale`] (the arithmetic
/// of [`super::requant_run`]) and the two int16 results are stored as one lane-pair word,
/// `out[i · step]`. Nothing is done unless `n >= 1`, `step >= 1`, `accs` holds `2n` values and
/// `out` holds word `(n − 1) · step`. The results are `requant_run`'s where both channels'
/// output zero points are at most 0 (the caller checks: the module documentation says why).
///
/// With the DSP extension 16 instructions per pixel, where two [`super::requant_run`] passes
/// and a store loop over the pixels took about 23 (the row kernel of
/// [`crate::kernels::fast::depthwise`]).
#[inline(always)]
pub fn requant_pairs_relu16(
    accs: &[i32],
    out: &mut [u32],
    n: usize,
    step: usize,
    runs: &[super::RunScale; 2],
) {
    let last = n.wrapping_sub(1).wrapping_mul(step);
    if n == 0
        || step == 0
        || step > 1 << 20
        || n > 1 << 20
        || accs.len() < 2 * n
        || last >= out.len()
        || last / step != n - 1
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let [k0, k1] = runs;
        let consts = [
            k0.high as u32,
            k0.multiplier as u32,
            k0.shift,
            k1.high as u32,
            k1.multiplier as u32,
            k1.shift,
        ];
        // SAFETY: the check above: the loop runs `n >= 1` times (SUBS/BNE on r3), reading
        // `accs[2i]` and `accs[2i + 1]` (r0, 8 bytes per step; `2n <= accs.len()`) and writing
        // word `i · step` of `out` (r1, `4 · step` bytes per step; word `(n − 1) · step` is in
        // `out`) for `i < n`. The six constants are read from `consts` (r12) before the loop.
        // r6 and r7 (LLVM's base and frame pointers, not operands) are pushed first and popped
        // last: 8 bytes of stack below `sp`, nothing else. Only the named registers and the
        // flags (with Q) change. LDRD, LDM, SMLAL, USAT, PKHBT exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
            "push {{r6, r7}}",
            "ldm r12, {{r4, r5, r8, r9, r10, r11}}",
            "1:",
            "ldrd r6, r7, [r0], #8",
            // lane 0 (`requant_run`'s without the sign terms: the module documentation)
            "mov r12, #0x40000000",
            "mov lr, r4",
            "smlal r12, lr, r6, r5",
            "asr r6, lr, r8",
            // lane 1
            "mov r12, #0x40000000",
            "mov lr, r9",
            "smlal r12, lr, r7, r10",
            "asr r7, lr, r11",
            "usat r6, #15, r6",
            "usat r7, #15, r7",
            "pkhbt r6, r6, r7, lsl #16",
            // (Thumb-2 has no post-index by a register.)
            "str r6, [r1]",
            "add r1, r1, r2",
            "subs r3, r3, #1",
            "bne 1b",
            "pop {{r6, r7}}",
            inout("r0") accs.as_ptr() => _, inout("r1") out.as_mut_ptr() => _,
            in("r2") (4 * step) as u32, inout("r3") n => _,
            inout("r12") consts.as_ptr() => _,
            out("r4") _, out("r5") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("lr") _,
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    for (i, s) in accs.chunks_exact(2).take(n).enumerate() {
        if let (Some(y), [a, b]) = (out.get_mut(i * step), s) {
            let [a, b] = [(a, &runs[0]), (b, &runs[1])].map(|(x, k)| {
                let v = RunScale {
                    min: 0,
                    max: 32767,
                    ..*k
                }
                .apply(*x);
                v as u32 & 0xffff
            });
            *y = a | b << 16;
        }
    }
}

impl DwPixelParams {
    /// Room for `pairs` channel pairs (at most [`DW_PIXEL_PAIRS`](super::DW_PIXEL_PAIRS);
    /// more are cut), as [`DwPixelParams::reset`] but writing only those pairs' `more` words,
    /// not zeroing the whole buffer (3 KiB per call): the pass loops read exactly `pairs`
    /// pairs, and the caller sets each of them ([`DwPixelParams::set_taps`]) before a pass runs.
    pub fn reset_pairs(&mut self, pairs: usize) {
        let pairs = pairs.min(super::DW_PIXEL_PAIRS);
        for (j, p) in self
            .words
            .chunks_exact_mut(super::DW_PIXEL_WORDS)
            .enumerate()
            .take(pairs)
        {
            if let Some(more) = p.last_mut() {
                *more = u32::from(j + 1 < pairs);
            }
        }
        self.pairs = pairs;
    }
}

/// `dst[i] = src[i · step]` and, if given, `again[i]` the same, for `i` below the shortest of
/// `dst`, `again` and the words `src` holds at that step: a ring row of the depthwise row
/// kernel and its repeated slot. With the DSP extension five or six instructions per word
/// (the Rust loop took nine or ten: LLVM unrolled it with a bounds check per word).
#[inline(never)]
pub fn copy_strided(src: &[u32], step: usize, dst: &mut [u32], again: Option<&mut [u32]>) {
    let mut n = dst.len().min(src.len().div_ceil(step.max(1)));
    if let Some(a) = &again {
        n = n.min(a.len());
    }
    if n == 0 || step == 0 || step > 1 << 20 {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        // SAFETY: the loop runs `n >= 1` times (SUBS/BNE on r3), reading word `i · step` of
        // `src` (r0, `4 · step` bytes per word; `(n − 1) · step < src.len()` as `n <=
        // ⌈src.len() / step⌉`) and writing word `i` of `dst` (r1) and, in the second form,
        // of `again` (r2), for `i < n <= len`. No stack; only the named registers and the
        // flags change.
        match again {
            // SAFETY: see above.
            Some(again) => unsafe {
                core::arch::asm!(
                "1:",
                "ldr r12, [r0]",
                "add r0, r0, r4",
                "str r12, [r1], #4",
                "str r12, [r2], #4",
                "subs r3, r3, #1",
                "bne 1b",
                inout("r0") src.as_ptr() => _, inout("r1") dst.as_mut_ptr() => _,
                inout("r2") again.as_mut_ptr() => _, inout("r3") n => _,
                in("r4") (4 * step) as u32, out("r12") _,
                options(nostack),
                );
            },
            // SAFETY: see above.
            None => unsafe {
                core::arch::asm!(
                "1:",
                "ldr r12, [r0]",
                "add r0, r0, r4",
                "str r12, [r1], #4",
                "subs r3, r3, #1",
                "bne 1b",
                inout("r0") src.as_ptr() => _, inout("r1") dst.as_mut_ptr() => _,
                inout("r3") n => _, in("r4") (4 * step) as u32, out("r12") _,
                options(nostack),
                );
            },
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let words = src.iter().step_by(step).take(n);
        match again {
            Some(again) => {
                for ((d, e), s) in dst.iter_mut().zip(again.iter_mut()).zip(words) {
                    *d = *s;
                    *e = *s;
                }
            }
            None => dst.iter_mut().zip(words).for_each(|(d, s)| *d = *s),
        }
    }
}

impl DwPixelParams {
    /// Pair `j`'s taps, biases and output stages (both with the same clamp, `runs[0]`'s), from
    /// the two channels' int8 taps as they lie in the weights, each tap pair packed as it is
    /// written (building the nine words first made LLVM spill the eighteen taps: about 200
    /// instructions per channel pair where this takes about 110).
    #[inline(always)]
    pub fn set_taps(
        &mut self,
        j: usize,
        w: [&[i8; 9]; 2],
        bias: [i32; 2],
        runs: [super::RunScale; 2],
    ) {
        if j >= self.pairs {
            return;
        }
        let at = j * super::DW_PIXEL_WORDS;
        // Words 4 to 22: the general and doubled forms (word 23 is `more`).
        let Some(p) = self
            .words
            .get_mut(at + super::DW_PIXEL_SKIP..at + super::DW_PIXEL_WORDS - 1)
            .and_then(|p| p.first_chunk_mut::<19>())
        else {
            return;
        };
        let [r0, r1] = runs;
        p[0] = bias[0] as u32;
        p[1] = bias[1] as u32;
        for (d, (a, b)) in p[2..11].iter_mut().zip(w[0].iter().zip(w[1])) {
            *d = super::pair(i32::from(*a), i32::from(*b));
        }
        p[11] = r0.high as u32;
        p[12] = r0.multiplier as u32;
        p[13] = r0.shift;
        p[14] = r1.high as u32;
        p[15] = r1.multiplier as u32;
        p[16] = r1.shift;
        p[17] = r0.min as u32;
        p[18] = r0.max as u32;
    }
}

impl DwPixelParams {
    /// Pair `j`'s constants in the doubled form of the relu16 passes ([`dw3x3_pixel_relu16`],
    /// [`dw3x3_pixel2_relu16`]): words `2 · bias0, 2 · bias1` twice, the nine tap pairs
    /// doubled, then per lane `2 · high, multiplier, shift + 1`; word 19 (`more`) is left as
    /// [`DwPixelParams::reset_pairs`] wrote it. The module documentation says why the passes'
    /// results on it are `requant_run`'s with the clamp `[0, 32767]`; `false`, with nothing
    /// written, where its bounds do not hold for sums of nine int16 inputs (the caller then
    /// takes [`DwPixelParams::set_taps`] and the general pass).
    #[inline(always)]
    pub fn set_taps_doubled(
        &mut self,
        j: usize,
        w: [&[i8; 9]; 2],
        bias: [i32; 2],
        runs: [super::RunScale; 2],
    ) -> bool {
        if j >= self.pairs || !doubled_fits(bias[0], &runs[0]) || !doubled_fits(bias[1], &runs[1]) {
            return false;
        }
        let at = j * super::DW_PIXEL_WORDS;
        // Words 4 to 22: the general and doubled forms (word 23 is `more`).
        let Some(p) = self
            .words
            .get_mut(at + super::DW_PIXEL_SKIP..at + super::DW_PIXEL_WORDS - 1)
            .and_then(|p| p.first_chunk_mut::<19>())
        else {
            return false;
        };
        let [r0, r1] = runs;
        // `doubled_fits`: the doubled biases, highs and the shifts fit.
        let [b0, b1] = bias.map(|b| b.wrapping_mul(2) as u32);
        p[0] = b0;
        p[1] = b1;
        p[2] = b0;
        p[3] = b1;
        for (d, (a, b)) in p[4..13].iter_mut().zip(w[0].iter().zip(w[1])) {
            *d = super::pair(2 * i32::from(*a), 2 * i32::from(*b));
        }
        p[13] = r0.high.wrapping_mul(2) as u32;
        p[14] = r0.multiplier as u32;
        p[15] = r0.shift + 1;
        p[16] = r1.high.wrapping_mul(2) as u32;
        p[17] = r1.multiplier as u32;
        p[18] = r1.shift + 1;
        true
    }
}

/// True if a channel with `bias` and output stage `run` meets the doubled form's bounds (the
/// module documentation) for every sum of nine int8 taps on int16 inputs: with `X = |bias| +
/// 9 · 128 · 32768`, `X < 2^30` (the doubled sum fits) and `2 · |high| + X + 2 < 2^31` (SMMLAR's
/// high word does not wrap: `|2x · m| / 2^32 < X` as `m < 2^31`), and `shift + 1 <= 31`. In
/// 32-bit arithmetic: it runs once per channel per call (64-bit products cost the small maps'
/// layers about 2 % more instructions).
#[inline(always)]
pub(super) fn doubled_fits(bias: i32, run: &super::RunScale) -> bool {
    const SUMS: u32 = 9 * 128 * 32768;
    let x = bias.unsigned_abs().saturating_add(SUMS);
    let high = run.high.unsigned_abs();
    run.shift <= 30 && x < 1 << 30 && high < 1 << 29 && 2 * high + x + 2 < 1 << 31
}

/// Copies the first `min(dst.len(), src.len())` words of `src` into `dst`: the ring rows and
/// pad columns of the depthwise pixel kernel. With the DSP extension eight words per LDM/STM
/// pair (half an instruction a word with the loop; four words per pair took one, and
/// `__aeabi_memcpy4` 3.25, a word at a time, 0.34 M instructions of MobileNetV1 in these
/// copies), then four, the last one to three words one by one.
#[inline(always)]
pub fn copy_words(dst: &mut [u32], src: &[u32]) {
    let n = dst.len().min(src.len());
    #[cfg(icefold_dsp)]
    {
        let octs = n / 8;
        if octs > 0 {
            // SAFETY: the loop runs `octs >= 1` times (SUBS/BNE on r2), reading words `8i ..
            // 8i + 8` of `src` (r1) and writing the same words of `dst` (r0) for `i < octs`,
            // `8 · octs <= n <= len` of both. No stack; only the named registers and the
            // flags change (r6 and r7, LLVM's base and frame pointers, are not touched).
            unsafe {
                core::arch::asm!(
                "1:",
                "ldmia r1!, {{r3, r4, r5, r8, r9, r10, r11, r12}}",
                "stmia r0!, {{r3, r4, r5, r8, r9, r10, r11, r12}}",
                "subs r2, r2, #1",
                "bne 1b",
                inout("r0") dst.as_mut_ptr() => _, inout("r1") src.as_ptr() => _,
                inout("r2") octs => _,
                out("r3") _, out("r4") _, out("r5") _, out("r8") _, out("r9") _,
                out("r10") _, out("r11") _, out("r12") _,
                options(nostack),
                );
            }
        }
        if n % 8 >= 4 {
            let at = 8 * octs;
            // SAFETY: reads words `at .. at + 4` of `src` and writes the same words of `dst`,
            // `at + 4 <= n <= len` of both. No stack; only the named registers change.
            unsafe {
                core::arch::asm!(
                "ldmia r1, {{r3, r4, r5, r12}}",
                "stmia r0, {{r3, r4, r5, r12}}",
                in("r0") dst.as_mut_ptr().wrapping_add(at),
                in("r1") src.as_ptr().wrapping_add(at),
                out("r3") _, out("r4") _, out("r5") _, out("r12") _,
                options(nostack),
                );
            }
        }
        let rest = n % 4;
        if rest > 0 {
            let at = n - rest;
            // SAFETY: the loop runs `rest` (1 to 3) times, reading word `at + i` of `src` and
            // writing word `at + i` of `dst` for `i < rest`, `at + rest = n <= len` of both.
            // No stack; only the named registers and the flags change.
            unsafe {
                core::arch::asm!(
                "1:",
                "ldr r3, [r1], #4",
                "str r3, [r0], #4",
                "subs r2, r2, #1",
                "bne 1b",
                inout("r0") dst.as_mut_ptr().wrapping_add(at) => _,
                inout("r1") src.as_ptr().wrapping_add(at) => _,
                inout("r2") rest => _, out("r3") _,
                options(nostack),
                );
            }
        }
    }
    #[cfg(not(icefold_dsp))]
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
}

#[cfg(all(test, not(icefold_dsp)))]
mod tests {
    use super::*;
    use crate::kernels::fast::requant::{Bounds, Scale};
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{ClampI16, WideOutputQuant};
    use crate::quant::Requant;

    /// The doubled form's output stage (SMMLAR on `2x`, `2 · high`, shift + 1) against the
    /// reference's int16 requantization with the clamp `[0, 32767]` and output zero points at
    /// most 0, on sums aimed at the rounding boundaries (results in and around `0..=32767`,
    /// every right shift) and at the form's bounds (large biases), wherever `doubled_fits`
    /// accepts the channel.
    #[test]
    fn doubled_stage_equals_the_reference() {
        let mut gen = Gen(0x5eed_d0b1);
        let mut checked = 0;
        for _ in 0..400_000 {
            let requant = Requant {
                multiplier: gen.range(1 << 30, i32::MAX),
                shift: gen.range(-31, -1),
            };
            let right = requant.shift.unsigned_abs();
            let zero_point = -(gen.range(0, 40) as i16);
            let bounds = Bounds {
                zero_point: i32::from(zero_point),
                min: 0,
                max: 32767,
            };
            let Some(run) = Scale::new(requant).and_then(|s| s.run(&bounds)) else {
                continue;
            };
            // A result near `y` (a rounding boundary half of the time), or a sum anywhere.
            let x = if gen.next() % 4 == 0 {
                gen.range(-(1 << 30) + 1, (1 << 30) - 1)
            } else {
                let y = i128::from(gen.range(-8, 32800));
                let at = (y << (31 + right)) / i128::from(requant.multiplier);
                let x = at + i128::from(gen.range(-3, 3));
                x.clamp(-(1 << 30) + 1, (1 << 30) - 1) as i32
            };
            // The bias is the sum less nine products at most.
            let bias = x - gen.range(-(9 * 128 * 32768), 9 * 128 * 32768);
            if !doubled_fits(bias, &run) {
                continue;
            }
            let want = WideOutputQuant {
                zero_point,
                clamp: ClampI16 { min: 0, max: 32767 },
            }
            .requantize(x, requant);
            let consts = [
                run.high.wrapping_mul(2) as u32,
                run.multiplier as u32,
                run.shift + 1,
            ];
            let got = doubled_stage(x.wrapping_mul(2), consts);
            assert_eq!(
                got, want as u32,
                "x {x}, {requant:?}, zero point {zero_point}"
            );
            checked += 1;
        }
        assert!(checked > 200_000, "{checked} sums checked");
    }
}

// The transposed ring (stride 1, an even output width): per column pair `k` of a padded row
// and channel pair `j`, word `k · 2 COL + 2j` holds channel `2j`'s two columns `[x(2k),
// x(2k + 1)]` and the next word channel `2j + 1`'s, so that SMLAD takes two taps of a
// channel in one instruction (simd/depthwise.rs, `dw3x3_pairs_transposed`).

impl DwPixelParams {
    /// Pair `j`'s constants in the transposed-ring form of [`dw3x3_pairs_transposed`]: words
    /// 1 to 4 `2 · bias0, 2 · bias1` twice, words 5 to 16 per kernel row `[w0, w1]` and `[w1,
    /// w2]` of each channel (lanes doubled: `w01(c), w01(c + 1), w12(c), w12(c + 1)`), words
    /// 17 to 22 per lane `2 · high, multiplier, shift + 1` (the doubled form's stage);
    /// word 23 (`more`) is left as [`DwPixelParams::reset_pairs`] wrote it. `false`, with
    /// nothing written, where [`DwPixelParams::set_taps_doubled`] would refuse the pair.
    #[inline(always)]
    pub fn set_taps_transposed(
        &mut self,
        j: usize,
        w: [&[i8; 9]; 2],
        bias: [i32; 2],
        runs: [super::RunScale; 2],
    ) -> bool {
        if j >= self.pairs || !doubled_fits(bias[0], &runs[0]) || !doubled_fits(bias[1], &runs[1]) {
            return false;
        }
        let at = j * super::DW_PIXEL_WORDS;
        let Some(p) = self
            .words
            .get_mut(at + 1..at + super::DW_PIXEL_WORDS - 1)
            .and_then(|p| p.first_chunk_mut::<22>())
        else {
            return false;
        };
        let [r0, r1] = runs;
        let [b0, b1] = bias.map(|b| b.wrapping_mul(2) as u32);
        p[0] = b0;
        p[1] = b1;
        p[2] = b0;
        p[3] = b1;
        let tap = |c: usize, t: usize| 2 * i32::from(w[c][t]);
        for ky in 0..3 {
            let row = &mut p[4 + 4 * ky..8 + 4 * ky];
            let t = 3 * ky;
            row[0] = super::pair(tap(0, t), tap(0, t + 1));
            row[1] = super::pair(tap(1, t), tap(1, t + 1));
            row[2] = super::pair(tap(0, t + 1), tap(0, t + 2));
            row[3] = super::pair(tap(1, t + 1), tap(1, t + 2));
        }
        p[16] = r0.high.wrapping_mul(2) as u32;
        p[17] = r0.multiplier as u32;
        p[18] = r0.shift + 1;
        p[19] = r1.high.wrapping_mul(2) as u32;
        p[20] = r1.multiplier as u32;
        p[21] = r1.shift + 1;
        true
    }
}

/// `pairs` pairs of adjacent output pixels along a row of a depthwise 3x3 convolution with
/// horizontal stride 1 and the clamp `[0, 32767]`, from three rows of the transposed ring
/// (ring column pairs of `2 · COL` words, `COL >= k.pairs()`; the module note above): pair
/// `p`'s windows are column pairs `p` and `p + 1`. Results as [`dw3x3_pixel2_relu16`]'s: pair
/// `j`'s go to `out[2p · b_at + j]` (A) and `out[(2p + 1) · b_at + j]` (B). `k` holds the
/// transposed-ring form ([`DwPixelParams::set_taps_transposed`]). Nothing is done unless
/// `pairs >= 1`, every row holds `(pairs + 1) · 2 COL` words, `b_at >= k.pairs()` and `out`
/// holds `(2 pairs − 1) · b_at + k.pairs()` words.
///
/// With the DSP extension, per kernel row of a channel pair and two pixels: two LDRDs of the
/// taps, two of the inputs and eight products (SMLAD: two taps per instruction; SMLATB and
/// SMLABT for the two single ones), where [`dw3x3_pixel2_relu16`] takes an LDM, four loads
/// and twelve SMLABB/SMLATT: 59 instructions for four outputs instead of 74 (in both, lane 1's
/// shift and `more` come in one LDRD).
#[inline(always)]
pub fn dw3x3_pairs_transposed<const COL: usize>(
    rows: [&[u32]; 3],
    k: &DwPixelParams,
    out: &mut [u32],
    b_at: usize,
    pairs: usize,
) {
    let n = k.pairs;
    if n == 0
        || n > COL
        || COL > 64
        || pairs == 0
        || pairs > 1 << 16
        || b_at < n
        || b_at > 1 << 20
        || out.len() < (2 * pairs - 1) * b_at + n
        || rows.iter().any(|r| r.len() < (pairs + 1) * 2 * COL)
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let [r0, r1, r2] = rows;
        // One kernel row of channel pair `j` for both pixels from ring row `$r`: r3/r4 pixel
        // A's sums (channels `2j`, `2j + 1`), r6/r7 pixel B's; r9/r10 the taps, r8/lr the
        // inputs. `$r` advances two words (the next channel pair).
        macro_rules! row {
            ($r:literal) => {
                concat!(
                    "ldrd r9, r10, [r5], #8\n",
                    "ldrd r8, lr, [",
                    $r,
                    "], #8\n",
                    "smlad r3, r8, r9, r3\n",
                    "smlatb r6, r8, r9, r6\n",
                    "smlad r4, lr, r10, r4\n",
                    "smlatb r7, lr, r10, r7\n",
                    "ldrd r9, r10, [r5], #8\n",
                    "ldrd r8, lr, [",
                    $r,
                    ", #{c2}]\n",
                    "smlabt r3, r8, r9, r3\n",
                    "smlad r6, r8, r9, r6\n",
                    "smlabt r4, lr, r10, r4\n",
                    "smlad r7, lr, r10, r7\n",
                )
            };
        }
        // As `dw3x3_pixel2_relu16`'s.
        macro_rules! stage {
            ($a:literal, $b:literal, $shift:literal) => {
                concat!(
                    "ldrd r9, r10, [r5], #8\n",
                    "smmlar ",
                    $a,
                    ", ",
                    $a,
                    ", r10, r9\n",
                    "smmlar ",
                    $b,
                    ", ",
                    $b,
                    ", r10, r9\n",
                    $shift,
                    "\n",
                    "asr ",
                    $a,
                    ", ",
                    $a,
                    ", r10\n",
                    "asr ",
                    $b,
                    ", ",
                    $b,
                    ", r10\n",
                )
            };
        }
        // SAFETY: the check above. Pixel pair `p < pairs` (the outer loop counts `pairs >= 1`
        // down on the stack), channel pair `j` (the inner loop runs exactly `n = k.pairs`
        // times: the `more` words of `DwPixelParams` (word 23), private to `simd`, are nonzero
        // for `j < n − 1` and zero for `j = n − 1`) reads words `p · 2 COL + 2j`, `+ 1`, and
        // `(p + 1) · 2 COL + 2j`, `+ 1` of each row (r0..r2 advance two words per channel pair
        // after the first load, the immediate is `2 COL` words less those two; after the inner
        // loop they advance `2 COL − 2n` words more, `r3` below), all below `(pairs + 1) · 2
        // COL <= len` as `n <= COL`; it reads words 1 to 23 of pair `j` of `k.words` (r5
        // starts at word 1, advances 96 bytes per pair, `n <= DW_PIXEL_PAIRS`, and is reset
        // from the stack per pixel pair) and writes words `2p · b_at + j` and `(2p + 1) · b_at
        // + j` of `out` (r12 advances one word per channel pair, then `2 · b_at − n` words,
        // `r4`; r11 = 4 · b_at; `(2 pairs − 1) · b_at + n <= out.len()`). r6 and r7 (LLVM's
        // base and frame pointers, not operands) are pushed first and popped last, and the
        // four words of the outer loop (k.words, both steps, the count) are below them: 24
        // bytes of stack below `sp`, restored. Only the named registers and the flags (with
        // Q) change. LDM, LDRD, SMLAD, SMLATB, SMLABT, SMMLAR, USAT, PKHBT exist on every
        // icefold_dsp core.
        unsafe {
            core::arch::asm!(
            "push {{r6, r7}}",
            "sub sp, sp, #16",
            "str r5, [sp]",
            "strd r3, r4, [sp, #4]",
            "str r8, [sp, #12]",
            "2:",
            "1:",
            // Both pixels' doubled biases.
            "ldm r5!, {{r3, r4, r6, r7}}",
            row!("r0"),
            row!("r1"),
            row!("r2"),
            stage!("r3", "r6", "ldr r10, [r5], #4"),
            // with `more` (word 23), and on to the next pair's word 1
            stage!("r4", "r7", "ldrd r10, r8, [r5], #12"),
            "usat r3, #15, r3",
            "usat r4, #15, r4",
            "usat r6, #15, r6",
            "usat r7, #15, r7",
            "pkhbt r3, r3, r4, lsl #16",
            "pkhbt r6, r6, r7, lsl #16",
            "str r6, [r12, r11]",
            "str r3, [r12], #4",
            "cmp r8, #0",
            "bne 1b",
            // The next pixel pair: rows one column pair on, outputs `2 · b_at` words.
            "ldrd r8, r9, [sp, #4]",
            "add r0, r0, r8",
            "add r1, r1, r8",
            "add r2, r2, r8",
            "add r12, r12, r9",
            "ldr r5, [sp]",
            "ldr r8, [sp, #12]",
            "subs r8, r8, #1",
            "str r8, [sp, #12]",
            "bne 2b",
            "add sp, sp, #16",
            "pop {{r6, r7}}",
            c2 = const 8 * COL - 8,
            inout("r0") r0.as_ptr() => _, inout("r1") r1.as_ptr() => _,
            inout("r2") r2.as_ptr() => _,
            inout("r5") k.words.as_ptr().wrapping_add(1) => _,
            inout("r12") out.as_mut_ptr() => _,
            in("r11") (4 * b_at) as u32,
            inout("r3") (8 * COL - 8 * n) as u32 => _,
            inout("r4") (8 * b_at - 4 * n) as u32 => _,
            inout("r8") pairs as u32 => _,
            out("r9") _, out("r10") _, out("lr") _,
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let words = k.words.chunks_exact(super::DW_PIXEL_WORDS).take(n);
        for (j, w) in words.enumerate() {
            let Some(w) = w.get(1..).and_then(|w| w.first_chunk::<22>()) else {
                return;
            };
            let lo = |v: u32| i32::from(v as i16);
            let hi = |v: u32| (v as i32) >> 16;
            for p in 0..pairs {
                let mut acc = [w[0] as i32, w[1] as i32, w[2] as i32, w[3] as i32];
                for (ky, row) in rows.iter().enumerate() {
                    let t = &w[4 + 4 * ky..8 + 4 * ky];
                    for lane in 0..2 {
                        let x01 = row.get(p * 2 * COL + 2 * j + lane).copied().unwrap_or(0);
                        let x23 = row
                            .get((p + 1) * 2 * COL + 2 * j + lane)
                            .copied()
                            .unwrap_or(0);
                        let (w01, w12) = (t[lane], t[2 + lane]);
                        // SMLAD, SMLABT (A); SMLATB, SMLAD (B): wrapping like the instructions.
                        let a = lo(x01) * lo(w01) + hi(x01) * hi(w01) + lo(x23) * hi(w12);
                        let b = hi(x01) * lo(w01) + lo(x23) * lo(w12) + hi(x23) * hi(w12);
                        acc[lane] = acc[lane].wrapping_add(a);
                        acc[2 + lane] = acc[2 + lane].wrapping_add(b);
                    }
                }
                let stage = |x: i32, lane: usize| {
                    let s = &w[16 + 3 * lane..19 + 3 * lane];
                    doubled_stage(x, [s[0], s[1], s[2]])
                };
                let a = stage(acc[0], 0) | stage(acc[1], 1) << 16;
                let b = stage(acc[2], 0) | stage(acc[3], 1) << 16;
                if let Some(y) = out.get_mut(2 * p * b_at + j) {
                    *y = a;
                }
                if let Some(y) = out.get_mut((2 * p + 1) * b_at + j) {
                    *y = b;
                }
            }
        }
    }
}

/// `dst[2j] = [a[j].lo, b[j].lo]` and `dst[2j + 1] = [a[j].hi, b[j].hi]` (int16 lanes) for `j`
/// below the shortest of `a`, `b` and half of `dst`: the channel pairs `a` of one column and
/// `b` of the next as the transposed ring's words (PKHBT, PKHTB). With the DSP extension 2.5
/// instructions per word written, two channel pairs per step.
#[inline(always)]
pub fn copy_transposed(dst: &mut [u32], a: &[u32], b: &[u32]) {
    let n = a.len().min(b.len()).min(dst.len() / 2);
    let twos = n / 2;
    #[cfg(icefold_dsp)]
    if twos > 0 {
        // SAFETY: the loop runs `twos >= 1` times (SUBS/BNE on r12), reading words `2i`,
        // `2i + 1` of `a` (r1) and `b` (r2) and writing words `4i .. 4i + 4` of `dst` (r0),
        // `i < twos`, `2 · twos <= n`, within all three (`4 · twos <= 2n <= dst.len()`). No
        // stack; only the named registers and the flags change. LDRD, STRD, PKHBT, PKHTB exist
        // on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
            "1:",
            "ldrd r3, r4, [r1], #8",
            "ldrd r5, r8, [r2], #8",
            "pkhbt r9, r3, r5, lsl #16",
            "pkhtb r10, r5, r3, asr #16",
            "pkhbt r3, r4, r8, lsl #16",
            "pkhtb r4, r8, r4, asr #16",
            "strd r9, r10, [r0], #8",
            "strd r3, r4, [r0], #8",
            "subs r12, r12, #1",
            "bne 1b",
            inout("r0") dst.as_mut_ptr() => _, inout("r1") a.as_ptr() => _,
            inout("r2") b.as_ptr() => _, inout("r12") twos => _,
            out("r3") _, out("r4") _, out("r5") _, out("r8") _, out("r9") _, out("r10") _,
            options(nostack),
            );
        }
    }
    #[cfg(icefold_dsp)]
    let from = 2 * twos;
    #[cfg(not(icefold_dsp))]
    let from = 0;
    let _ = twos;
    for j in from..n {
        if let (Some(&x), Some(&y), Some(d)) = (a.get(j), b.get(j), dst.get_mut(2 * j..2 * j + 2)) {
            d[0] = (x & 0xffff) | (y << 16);
            d[1] = (y & 0xffff_0000) | (x >> 16);
        }
    }
}

/// [`copy_transposed`] for `pairs` consecutive column pairs of an input row: column pair `k` of
/// `dst` (words `k · 2 · col ..`) from the `n` channel pairs of input pixels `2k` (words `2k ·
/// half ..` of `src`) and `2k + 1`. Nothing is done unless `n` is even, `2 <= n <= half`, `n <=
/// col`, `pairs >= 1`, `src` holds `(2 pairs − 1) · half + n` words and `dst` `(pairs − 1) · 2
/// col + 2n`. With the DSP extension 2.5 instructions per word written and five per column pair
/// (a call per column pair from Rust cost about 100).
#[inline(always)]
pub fn copy_transposed_columns(
    dst: &mut [u32],
    src: &[u32],
    n: usize,
    half: usize,
    col: usize,
    pairs: usize,
) {
    if n % 2 != 0
        || n < 2
        || n > half
        || n > col
        || half > 1 << 16
        || col > 1 << 16
        || pairs == 0
        || pairs > 1 << 16
        || src.len() < (2 * pairs - 1) * half + n
        || dst.len() < (pairs - 1) * 2 * col + 2 * n
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        // SAFETY: the check above. Column pair `k < pairs` (SUBS/BNE on r12), step `i < n / 2`
        // (SUBS/BNE on lr, reset from r11) reads words `2k · half + 2i`, `+ 1` (r1) and `(2k +
        // 1) · half + 2i`, `+ 1` (r2) of `src`, all below `(2 pairs − 1) · half + n`, and
        // writes words `k · 2 col + 4i .. + 4` of `dst` (r0), below `(pairs − 1) · 2 col +
        // 2n`; after a column pair r1 and r2 advance `2 half − n` words more (r9), r0 `2 col −
        // 2n` (r10). r6 and r7 (LLVM's base and frame pointers, not operands) are pushed first
        // and popped last: 8 bytes of stack below `sp`, restored. Only the named registers and
        // the flags change. LDRD, STRD, PKHBT, PKHTB exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
            "push {{r6, r7}}",
            "2:",
            "mov lr, r11",
            "1:",
            "ldrd r3, r4, [r1], #8",
            "ldrd r5, r8, [r2], #8",
            "pkhbt r6, r3, r5, lsl #16",
            "pkhtb r7, r5, r3, asr #16",
            "pkhbt r3, r4, r8, lsl #16",
            "pkhtb r4, r8, r4, asr #16",
            "strd r6, r7, [r0], #8",
            "strd r3, r4, [r0], #8",
            "subs lr, lr, #1",
            "bne 1b",
            "add r1, r1, r9",
            "add r2, r2, r9",
            "add r0, r0, r10",
            "subs r12, r12, #1",
            "bne 2b",
            "pop {{r6, r7}}",
            inout("r0") dst.as_mut_ptr() => _, inout("r1") src.as_ptr() => _,
            inout("r2") src.as_ptr().wrapping_add(half) => _,
            inout("r12") pairs => _, in("r11") n / 2,
            in("r9") 4 * (2 * half - n), in("r10") 4 * (2 * col - 2 * n),
            out("r3") _, out("r4") _, out("r5") _, out("r8") _, out("lr") _,
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    for (k, d) in dst.chunks_mut(2 * col).take(pairs).enumerate() {
        let a = src.get(2 * k * half..).unwrap_or_default();
        let b = src.get((2 * k + 1) * half..).unwrap_or_default();
        copy_transposed(
            d,
            a.get(..n).unwrap_or_default(),
            b.get(..n).unwrap_or_default(),
        );
    }
}

/// One output pixel from the transposed ring (an odd row's last): [`dw3x3_pairs_transposed`]'s
/// pixel A of pixel pair 0 alone (its window column pairs 0 and 1 of `rows`), pair `j`'s
/// result into `out[j]`. Nothing is done unless `1 <= k.pairs() <= COL`, every row holds `4 ·
/// COL` words and `out` holds `k.pairs()`. With the DSP extension 40 instructions per channel
/// pair (two outputs; six products) where [`dw3x3_pixel_relu16`] takes 46 on the other ring.
#[inline(always)]
pub fn dw3x3_pixel_transposed<const COL: usize>(
    rows: [&[u32]; 3],
    k: &DwPixelParams,
    out: &mut [u32],
) {
    let n = k.pairs;
    if n == 0 || n > COL || COL > 64 || out.len() < n || rows.iter().any(|r| r.len() < 4 * COL) {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let [r0, r1, r2] = rows;
        macro_rules! row {
            ($r:literal) => {
                concat!(
                    "ldrd r9, r10, [r5], #8\n",
                    "ldrd r8, lr, [",
                    $r,
                    "], #8\n",
                    "smlad r3, r8, r9, r3\n",
                    "smlad r4, lr, r10, r4\n",
                    "ldrd r9, r10, [r5], #8\n",
                    "ldrd r8, lr, [",
                    $r,
                    ", #{c2}]\n",
                    "smlabt r3, r8, r9, r3\n",
                    "smlabt r4, lr, r10, r4\n",
                )
            };
        }
        // SAFETY: the check above. Channel pair `j` (the loop runs exactly `n = k.pairs`
        // times: the `more` words of `DwPixelParams` (word 23), private to `simd`, are nonzero
        // for `j < n − 1` and zero for `j = n − 1`) reads words `2j`, `2j + 1`, `2 COL + 2j`
        // and `2 COL + 2j + 1` of each row (r0..r2 advance two words per channel pair after
        // the first load, the immediate is `2 COL` words less those two), all below `4 COL <=
        // len` as `n <= COL`; it reads words 1 to 23 of pair `j` of `k.words` (r5 starts at
        // word 1 and advances 96 bytes per pair, `n <= DW_PIXEL_PAIRS`) and writes word `j` of
        // `out` (`n <= out.len()`). No stack; only the named registers and the flags (with Q)
        // change. LDRD, SMLAD, SMLABT, SMMLAR, USAT, PKHBT exist on every icefold_dsp core; r6
        // and r7 (LLVM's base and frame pointers) are not touched.
        unsafe {
            core::arch::asm!(
            "1:",
            // The doubled biases (the second copy stepped over).
            "ldrd r3, r4, [r5], #16",
            row!("r0"),
            row!("r1"),
            row!("r2"),
            "ldrd r9, r10, [r5], #8",
            "smmlar r3, r3, r10, r9",
            "ldr r10, [r5], #4",
            "asr r3, r3, r10",
            "ldrd r9, r10, [r5], #8",
            "smmlar r4, r4, r10, r9",
            // with `more` (word 23), and on to the next pair's word 1
            "ldrd r10, r8, [r5], #12",
            "asr r4, r4, r10",
            "usat r3, #15, r3",
            "usat r4, #15, r4",
            "pkhbt r3, r3, r4, lsl #16",
            "str r3, [r12], #4",
            "cmp r8, #0",
            "bne 1b",
            c2 = const 8 * COL - 8,
            inout("r0") r0.as_ptr() => _, inout("r1") r1.as_ptr() => _,
            inout("r2") r2.as_ptr() => _,
            inout("r5") k.words.as_ptr().wrapping_add(1) => _,
            inout("r12") out.as_mut_ptr() => _,
            out("r3") _, out("r4") _, out("r8") _, out("r9") _, out("r10") _, out("lr") _,
            options(nostack),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let words = k.words.chunks_exact(super::DW_PIXEL_WORDS).take(n);
        for (j, (w, y)) in words.zip(out.iter_mut()).enumerate() {
            let Some(w) = w.get(1..).and_then(|w| w.first_chunk::<22>()) else {
                return;
            };
            let lo = |v: u32| i32::from(v as i16);
            let hi = |v: u32| (v as i32) >> 16;
            let mut acc = [w[0] as i32, w[1] as i32];
            for (ky, row) in rows.iter().enumerate() {
                let t = &w[4 + 4 * ky..8 + 4 * ky];
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let x01 = row.get(2 * j + lane).copied().unwrap_or(0);
                    let x23 = row.get(2 * COL + 2 * j + lane).copied().unwrap_or(0);
                    let (w01, w12) = (t[lane], t[2 + lane]);
                    // SMLAD, SMLABT, wrapping like the instructions.
                    let a = lo(x01) * lo(w01) + hi(x01) * hi(w01) + lo(x23) * hi(w12);
                    *acc = acc.wrapping_add(a);
                }
            }
            let stage = |x: i32, lane: usize| {
                let s = &w[16 + 3 * lane..19 + 3 * lane];
                doubled_stage(x, [s[0], s[1], s[2]])
            };
            *y = stage(acc[0], 0) | stage(acc[1], 1) << 16;
        }
    }
}

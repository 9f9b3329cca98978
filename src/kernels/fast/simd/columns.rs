//! The first layers' register tile (`conv::columns`): two output channels by two output
//! pixels over gathered receptive fields, both operands interleaved word by word so that one
//! LDRD loads a word of each channel's weights and one a word of each pixel's field.

/// The sums of two output channels at a run of pixel pairs. `w` holds the channels' widened
/// weights interleaved word by word (`w0[0], w1[0], w0[1], w1[1], ...`: `2 · n` words, `n =
/// w.len() / 2`), `x` the pixel pairs one after another, each pair's two fields interleaved the
/// same way (`a[0], b[0], a[1], b[1], ...`: `2 · n` words per pair). For pair `p`,
/// `sums[4p..4p + 4]` becomes `[bias[0] + w0·a, bias[1] + w1·a, bias[0] + w0·b, bias[1] +
/// w1·b]` (SMLAD dot products of int16 lane pairs). Pairs: as many as both `x` and `sums`
/// hold. Nothing is written unless `n` is a nonzero multiple of 4.
///
/// With the DSP extension one loop over every pair: per word of the fields two LDRDs and four
/// SMLADs (26 instructions per 32 products with the loop's SUBS/BNE, where
/// [`super::smlad_2x2`] takes 34), and per pixel pair 14 (the biases, two STRDs, the weight
/// pointer stepped back, the pair count kept on the stack: all twelve allocatable registers
/// are live in the loop).
#[inline(always)]
pub fn smlad_2x2_pairs(w: &[u32], x: &[u32], bias: [i32; 2], sums: &mut [i32]) {
    let n = w.len() / 2;
    if n == 0 || n % 4 != 0 {
        return;
    }
    let pairs = (x.len() / (2 * n)).min(sums.len() / 4);
    if pairs == 0 {
        return;
    }
    // Fields of 16 or 20 words (3x3x3 windows, DS-CNN's 10x4x1): every pass unrolled.
    #[cfg(icefold_dsp)]
    if n == 16 || n == 20 {
        unrolled(w, x, bias, sums, n, pairs);
        return;
    }
    #[cfg(icefold_dsp)]
    {
        // Loop passes per pair, pairs left, the biases, the bytes of the weights.
        let mut block = [
            (n / 4) as u32,
            pairs as u32,
            bias[0] as u32,
            bias[1] as u32,
            (8 * n) as u32,
        ];
        // SAFETY: `w` holds `2n` words and each pass of the inner loop reads four LDRD pairs
        // (8 words) post-incremented, `n / 4` passes per pixel pair: the `2n` words of `w`,
        // after which the weight pointer steps back by `8n` bytes to `w`'s start. `x` holds at
        // least `pairs · 2n` words and the activation pointer reads `2n` of them per pair, never
        // stepping back: every load is inside `x`. `sums` holds at least `4 · pairs` words and
        // each pair stores four (two STRDs, post-incremented). All pointers are `u32`/`i32`
        // slices' (word-aligned, as LDRD/STRD require on Armv7-M). The five-word block is read
        // through `cnt`'s initial value, kept on the stack (pushed, then dropped: the stack is
        // balanced) while `cnt` counts; its second word (pairs left) is written. Only the named
        // registers, the flags, `block` and `sums` change. LDRD, STRD, LDR, STR, PUSH, MOV,
        // SUB, SMLAD, SUBS and BNE exist on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "push {{{cnt}}}",
                "1:",
                "ldr {cnt}, [sp]",
                "ldrd {a0}, {a1}, [{cnt}, #8]",
                "mov {b0}, {a0}",
                "mov {b1}, {a1}",
                "ldr {cnt}, [{cnt}]",
                "2:",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "ldrd {xa}, {xb}, [{px}], #8",
                "smlad {a0}, {w0}, {xa}, {a0}",
                "smlad {a1}, {w1}, {xa}, {a1}",
                "smlad {b0}, {w0}, {xb}, {b0}",
                "smlad {b1}, {w1}, {xb}, {b1}",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "ldrd {xa}, {xb}, [{px}], #8",
                "smlad {a0}, {w0}, {xa}, {a0}",
                "smlad {a1}, {w1}, {xa}, {a1}",
                "smlad {b0}, {w0}, {xb}, {b0}",
                "smlad {b1}, {w1}, {xb}, {b1}",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "ldrd {xa}, {xb}, [{px}], #8",
                "smlad {a0}, {w0}, {xa}, {a0}",
                "smlad {a1}, {w1}, {xa}, {a1}",
                "smlad {b0}, {w0}, {xb}, {b0}",
                "smlad {b1}, {w1}, {xb}, {b1}",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "ldrd {xa}, {xb}, [{px}], #8",
                "smlad {a0}, {w0}, {xa}, {a0}",
                "smlad {a1}, {w1}, {xa}, {a1}",
                "smlad {b0}, {w0}, {xb}, {b0}",
                "smlad {b1}, {w1}, {xb}, {b1}",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                "strd {a0}, {a1}, [{ps}], #8",
                "strd {b0}, {b1}, [{ps}], #8",
                "ldr {cnt}, [sp]",
                "ldr {xa}, [{cnt}, #16]",
                "sub {pw}, {pw}, {xa}",
                "ldr {xa}, [{cnt}, #4]",
                "subs {xa}, {xa}, #1",
                "str {xa}, [{cnt}, #4]",
                "bne 1b",
                "add sp, sp, #4",
                pw = inout(reg) w.as_ptr() => _,
                px = inout(reg) x.as_ptr() => _,
                ps = inout(reg) sums.as_mut_ptr() => _,
                cnt = inout(reg) block.as_mut_ptr() => _,
                a0 = out(reg) _,
                a1 = out(reg) _,
                b0 = out(reg) _,
                b1 = out(reg) _,
                w0 = out(reg) _,
                w1 = out(reg) _,
                xa = out(reg) _,
                xb = out(reg) _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        // Fields by index, not `chunks_exact(2 · n)`: once this loop is inlined into its
        // caller LLVM does not always carry `n > 0` here, and the Cortex-M0 build kept the
        // zero-size panic (and its formatting) in the int8 path (tests/mcu.rs walks it).
        for p in 0..pairs {
            let (Some(field), Some(out)) = (
                x.get(2 * n * p..2 * n * (p + 1)),
                sums.get_mut(4 * p..4 * p + 4),
            ) else {
                return;
            };
            let [mut a0, mut a1] = bias;
            let [mut b0, mut b1] = bias;
            for (ws, xs) in w.chunks_exact(2).zip(field.chunks_exact(2)) {
                if let (&[w0, w1], &[xa, xb]) = (ws, xs) {
                    a0 = super::smlad(w0, xa, a0);
                    a1 = super::smlad(w1, xa, a1);
                    b0 = super::smlad(w0, xb, b0);
                    b1 = super::smlad(w1, xb, b1);
                }
            }
            if let Ok(out) = <&mut [i32; 4]>::try_from(out) {
                *out = [a0, a1, b0, b1];
            }
        }
    }
}

/// One pass of [`smlad_2x2_pairs`]' loop in assembly text: four words of both channels'
/// weights (`{pw}`) and of both pixels' fields (`{px}`), sixteen SMLADs.
#[cfg(icefold_dsp)]
macro_rules! pass_2x2 {
    () => {
        concat!(
            "ldrd {w0}, {w1}, [{pw}], #8\n",
            "ldrd {xa}, {xb}, [{px}], #8\n",
            "smlad {a0}, {w0}, {xa}, {a0}\n",
            "smlad {a1}, {w1}, {xa}, {a1}\n",
            "smlad {b0}, {w0}, {xb}, {b0}\n",
            "smlad {b1}, {w1}, {xb}, {b1}\n",
            "ldrd {w0}, {w1}, [{pw}], #8\n",
            "ldrd {xa}, {xb}, [{px}], #8\n",
            "smlad {a0}, {w0}, {xa}, {a0}\n",
            "smlad {a1}, {w1}, {xa}, {a1}\n",
            "smlad {b0}, {w0}, {xb}, {b0}\n",
            "smlad {b1}, {w1}, {xb}, {b1}\n",
            "ldrd {w0}, {w1}, [{pw}], #8\n",
            "ldrd {xa}, {xb}, [{px}], #8\n",
            "smlad {a0}, {w0}, {xa}, {a0}\n",
            "smlad {a1}, {w1}, {xa}, {a1}\n",
            "smlad {b0}, {w0}, {xb}, {b0}\n",
            "smlad {b1}, {w1}, {xb}, {b1}\n",
            "ldrd {w0}, {w1}, [{pw}], #8\n",
            "ldrd {xa}, {xb}, [{px}], #8\n",
            "smlad {a0}, {w0}, {xa}, {a0}\n",
            "smlad {a1}, {w1}, {xa}, {a1}\n",
            "smlad {b0}, {w0}, {xb}, {b0}\n",
            "smlad {b1}, {w1}, {xb}, {b1}\n",
        )
    };
}

/// [`smlad_2x2_pairs`] for fields of `n` = 16 or 20 words (four or five passes, every pass
/// unrolled): no pass counter, so the pair count stays in a register and the biases on the
/// stack; per pixel pair 10 instructions beside the passes' 24 each, where the loop takes
/// 14 and two per pass. The caller checked `n`, `pairs` and the slices' lengths. Out of line:
/// called once per block and channel pair, and inlined at every call it cost 12 KB of code.
#[cfg(icefold_dsp)]
#[inline(never)]
fn unrolled(w: &[u32], x: &[u32], bias: [i32; 2], sums: &mut [i32], n: usize, pairs: usize) {
    // SAFETY: as [`smlad_2x2_pairs`]' loop (its caller's checks: `w` holds `2n` words, `x` at
    // least `pairs · 2n`, `sums` at least `4 · pairs`): per pair the passes read the `2n`
    // words of `w` (post-incremented, then stepped back by the `8n` bytes, an immediate: 128
    // or 160) and the next `2n` words of `x`, and two STRDs write the pair's four sums. The
    // biases are stored in 8 bytes below the stack pointer, reserved and released by the
    // block (balanced). Only the named registers, the flags and `sums` change. LDRD, STRD,
    // SUB, ADD, MOV, SMLAD, SUBS and BNE exist on every icefold_dsp core.
    macro_rules! passes {
        ($back:literal, $($pass:tt)*) => {
            unsafe {
                core::arch::asm!(
                    "sub sp, sp, #8",
                    "strd {a0}, {a1}, [sp]",
                    "1:",
                    "ldrd {a0}, {a1}, [sp]",
                    "mov {b0}, {a0}",
                    "mov {b1}, {a1}",
                    $($pass)*
                    "strd {a0}, {a1}, [{ps}], #8",
                    "strd {b0}, {b1}, [{ps}], #8",
                    $back,
                    "subs {cnt}, {cnt}, #1",
                    "bne 1b",
                    "add sp, sp, #8",
                    pw = inout(reg) w.as_ptr() => _,
                    px = inout(reg) x.as_ptr() => _,
                    ps = inout(reg) sums.as_mut_ptr() => _,
                    cnt = inout(reg) pairs => _,
                    a0 = inout(reg) bias[0] => _,
                    a1 = inout(reg) bias[1] => _,
                    b0 = out(reg) _,
                    b1 = out(reg) _,
                    w0 = out(reg) _,
                    w1 = out(reg) _,
                    xa = out(reg) _,
                    xb = out(reg) _,
                    options(),
                );
            }
        };
    }
    if n == 16 {
        passes!(
            "sub {pw}, {pw}, #128",
            pass_2x2!(),
            pass_2x2!(),
            pass_2x2!(),
            pass_2x2!(),
        );
    } else {
        passes!(
            "sub {pw}, {pw}, #160",
            pass_2x2!(),
            pass_2x2!(),
            pass_2x2!(),
            pass_2x2!(),
            pass_2x2!(),
        );
    }
}

/// Copies `rows` runs of `n` words of `src` into every second word of `dst`: run `r` starts at
/// byte `first + r · step` of `src` (any even offset: int16 values), its word `i` goes to
/// `dst[2 · (r · n + i)]` (one lane of an interleaved pixel pair, [`smlad_2x2_pairs`]).
/// `false` (nothing copied) unless `src` holds every byte read and `dst` every word written.
///
/// With the DSP extension one loop (LDR, STR, SUBS, BNE per word; five more per run), where
/// the Rust loops spend about 60 instructions on a 3x3x3 window's row of five words. The loads
/// may be unaligned: Armv7-M and Armv8-M mainline load words from any address unless the
/// system sets CCR.UNALIGN_TRP, which LLVM's code for these targets already assumes unset
/// (it emits unaligned LDRs for `u32::from_le_bytes` of four bytes).
#[inline(always)]
pub fn copy_rows(
    src: &[u8],
    first: usize,
    step: usize,
    rows: usize,
    n: usize,
    dst: &mut [u32],
) -> bool {
    let (Some(last), Some(words)) = (
        rows.checked_sub(1)
            .and_then(|r| r.checked_mul(step))
            .and_then(|b| b.checked_add(first))
            .and_then(|b| b.checked_add(n.checked_mul(4)?)),
        rows.checked_mul(n),
    ) else {
        return false;
    };
    if n == 0 || last > src.len() || words * 2 > dst.len() + 1 || step > u32::MAX as usize {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        // SAFETY: run `r` reads the `4n` bytes from `first + r · step`, the last run ending at
        // `last <= src.len()` (checked above; runs start at increasing offsets, so every run
        // lies inside `src`); the loads may be unaligned, which these cores allow (the doc
        // above). Word `j = r · n + i` is stored at `dst[2j]`, `2 · (rows · n − 1) < dst.len()`
        // (checked): every store is inside `dst` and word-aligned (a `u32` slice). Only the
        // named registers, the flags and `dst` change; no stack. LDR, STR, ADD, MOV, SUBS and
        // BNE exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "1:",
                "mov {i}, {n}",
                "mov {p}, {row}",
                "2:",
                "ldr {v}, [{p}], #4",
                "str {v}, [{d}], #8",
                "subs {i}, {i}, #1",
                "bne 2b",
                "add {row}, {row}, {step}",
                "subs {rows}, {rows}, #1",
                "bne 1b",
                row = inout(reg) src.as_ptr().wrapping_add(first) => _,
                step = in(reg) step,
                rows = inout(reg) rows => _,
                n = in(reg) n,
                d = inout(reg) dst.as_mut_ptr() => _,
                i = out(reg) _,
                p = out(reg) _,
                v = out(reg) _,
                options(nostack),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let runs = (0..rows).map(|r| first + r * step);
        let words = runs.flat_map(|at| (0..n).map(move |i| at + 4 * i));
        for (at, d) in words.zip(dst.iter_mut().step_by(2)) {
            if let Some(&[a, b, c, e]) = src.get(at..at + 4) {
                *d = u32::from_le_bytes([a, b, c, e]);
            }
        }
    }
    true
}

/// [`copy_rows`] for a run of `pixels` windows `pixel_step` bytes apart (consecutive output
/// pixels of one output row whose windows lie inside the input), each into its lane of the
/// interleaved pixel pairs [`smlad_2x2_pairs`] reads: window `q`'s run `r` starts at byte
/// `first + q · pixel_step + r · row_step` of `src`, and its word `i` goes to
/// `dst[((lane + q) / 2) · pair_words + (lane + q) % 2 + 2 · (r · n + i)]`. `false` (nothing
/// copied) unless `pixels`, `rows` and `n` are positive, `2 · rows · n <= pair_words`, `src`
/// holds every byte read and `dst` every word written.
///
/// With the DSP extension one loop over the pixels (LDR, STR, SUBS, BNE per word, six more
/// per run, fourteen per pixel; runs of 5 and 2 words unrolled: LDR and STR per word, five
/// more per run), where a [`copy_rows`] call per window with its checks and the window's
/// position took about 150 instructions per 3x3x3 window.
#[inline(always)]
pub fn copy_fields(
    src: &[u8],
    (first, pixel_step, row_step): (usize, usize, usize),
    (rows, n, pixels): (usize, usize, usize),
    dst: &mut [u32],
    (lane, pair_words): (usize, usize),
) -> bool {
    if pixels == 0 || rows == 0 || n == 0 || lane > 1 {
        return false;
    }
    // Words of one window in the destination: every second word of `2 · rows · n`.
    let Some(per_pixel) = rows.checked_mul(n).and_then(|w| w.checked_mul(2)) else {
        return false;
    };
    let (Some(last_byte), Some(last_word)) = (
        (pixels - 1)
            .checked_mul(pixel_step)
            .and_then(|b| b.checked_add((rows - 1).checked_mul(row_step)?))
            .and_then(|b| b.checked_add(first))
            .and_then(|b| b.checked_add(n.checked_mul(4)?)),
        ((lane + pixels - 1) / 2)
            .checked_mul(pair_words)
            .and_then(|w| w.checked_add((lane + pixels - 1) % 2 + per_pixel - 2)),
    ) else {
        return false;
    };
    if per_pixel > pair_words
        || last_byte > src.len()
        || last_word >= dst.len()
        || pixel_step > u32::MAX as usize
        || row_step > u32::MAX as usize
        || pair_words > (u32::MAX / 4) as usize
    {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        // Pixels left, the byte steps of the source's windows and runs, runs per window, words
        // per run, then the two steps of the destination (to the next lane, to the next pair's
        // first lane), swapped after every window.
        let lanes = [4u32, (4 * pair_words - 4) as u32];
        let mut block = [
            pixels as u32,
            pixel_step as u32,
            row_step as u32,
            rows as u32,
            n as u32,
            lanes[lane],
            lanes[1 - lane],
        ];
        // SAFETY: window `q < pixels` reads, for each run `r < rows`, the `4n` bytes from
        // `first + q · pixel_step + r · row_step`, the last ending at `last_byte <=
        // src.len()` (checked above; offsets grow with `q` and `r`, so every run lies inside
        // `src`); the loads may be unaligned, which these cores allow ([`copy_rows`]). It
        // writes the words `base(q) + 2 · j`, `j < rows · n`, of `dst`, `base(q)` the lane's
        // first word (it grows by 1 from lane 0 to lane 1 and by `pair_words − 1` from lane 1
        // to the next pair, the two steps of `block` in bytes, swapped per window): the last
        // is `last_word < dst.len()` (checked): inside `dst`, word-aligned (a `u32` slice).
        // The unrolled runs make the same loads and stores at immediate offsets (word `i` at
        // byte `4i` of the run, stored at byte `8i` from `{q}`, which then steps past the run's
        // `2n` words). It reads and writes the words of `block` (alive past the statement).
        // Only the named registers, the flags, `block` and `dst` change; no stack. LDR, STR,
        // LDRD, STRD, ADD, MOV, SUBS and BNE exist on every icefold_dsp core.
        macro_rules! windows {
            ($copy_run:expr) => {
                // SAFETY: the comment above.
                unsafe {
                    core::arch::asm!(
                        "1:",
                        "mov {row}, {s}",
                        "mov {q}, {d}",
                        "ldr {r}, [{blk}, #12]",
                        "2:",
                        $copy_run,
                        "ldr {v}, [{blk}, #8]",
                        "add {row}, {row}, {v}",
                        "subs {r}, {r}, #1",
                        "bne 2b",
                        "ldr {v}, [{blk}, #4]",
                        "add {s}, {s}, {v}",
                        "ldrd {v}, {i}, [{blk}, #20]",
                        "add {d}, {d}, {v}",
                        "strd {i}, {v}, [{blk}, #20]",
                        "ldr {v}, [{blk}]",
                        "subs {v}, {v}, #1",
                        "str {v}, [{blk}]",
                        "bne 1b",
                        s = inout(reg) src.as_ptr().wrapping_add(first) => _,
                        d = inout(reg) dst.as_mut_ptr().wrapping_add(lane) => _,
                        blk = in(reg) block.as_mut_ptr(),
                        row = out(reg) _,
                        p = out(reg) _,
                        q = out(reg) _,
                        r = out(reg) _,
                        i = out(reg) _,
                        v = out(reg) _,
                        options(nostack),
                    );
                }
            };
        }
        // A run's words from `{row}` to every second word from `{q}` on, `{q}` advanced past
        // them: unrolled for runs of 5 words (3x3x3 windows) and 2 (DS-CNN's 10x4x1), where
        // the loop spends two more instructions per word.
        match n {
            5 => windows!(concat!(
                "ldr {v}, [{row}]\n",
                "ldr {p}, [{row}, #4]\n",
                "str {v}, [{q}]\n",
                "str {p}, [{q}, #8]\n",
                "ldr {v}, [{row}, #8]\n",
                "ldr {p}, [{row}, #12]\n",
                "str {v}, [{q}, #16]\n",
                "str {p}, [{q}, #24]\n",
                "ldr {v}, [{row}, #16]\n",
                "str {v}, [{q}, #32]\n",
                "add {q}, {q}, #40",
            )),
            2 => windows!(concat!(
                "ldr {v}, [{row}]\n",
                "ldr {p}, [{row}, #4]\n",
                "str {v}, [{q}]\n",
                "str {p}, [{q}, #8]\n",
                "add {q}, {q}, #16",
            )),
            _ => windows!(concat!(
                "mov {p}, {row}\n",
                "ldr {i}, [{blk}, #16]\n",
                "3:\n",
                "ldr {v}, [{p}], #4\n",
                "str {v}, [{q}], #8\n",
                "subs {i}, {i}, #1\n",
                "bne 3b",
            )),
        }
        let _ = block;
    }
    #[cfg(not(icefold_dsp))]
    {
        for q in 0..pixels {
            let base = (lane + q) / 2 * pair_words + (lane + q) % 2;
            let at = first + q * pixel_step;
            let Some(out) = dst.get_mut(base..) else {
                return false;
            };
            copy_rows(src, at, row_step, rows, n, out);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::smlad;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn pairs_equal_plain_dot_products() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u32
        };
        for n in [4usize, 8, 16, 20] {
            for pairs in [1usize, 2, 5] {
                let w: Vec<u32> = (0..2 * n).map(|_| next()).collect();
                let x: Vec<u32> = (0..2 * n * pairs).map(|_| next()).collect();
                let bias = [next() as i32 >> 8, next() as i32 >> 8];
                // One pair more room than the fields fill: the last stays untouched.
                let mut sums = std::vec![7i32; 4 * pairs + 4];
                smlad_2x2_pairs(&w, &x, bias, &mut sums);
                for p in 0..pairs {
                    let f = &x[2 * n * p..2 * n * (p + 1)];
                    let dot = |k: usize, q: usize| {
                        (0..n).fold(bias[k], |acc, j| smlad(w[2 * j + k], f[2 * j + q], acc))
                    };
                    assert_eq!(
                        sums[4 * p..4 * p + 4],
                        [dot(0, 0), dot(1, 0), dot(0, 1), dot(1, 1)]
                    );
                }
                assert_eq!(sums[4 * pairs..], [7; 4]);
            }
        }
        // Not a whole number of passes: nothing written.
        let mut sums = [7i32; 4];
        smlad_2x2_pairs(&[1; 6], &[1; 6], [0, 0], &mut sums);
        assert_eq!(sums, [7; 4]);
    }

    #[test]
    fn fields_land_in_their_lanes() {
        let src: Vec<u8> = (0..200u8).collect();
        let word = |at: usize| u32::from_le_bytes([0, 1, 2, 3].map(|k| src[at + k]));
        // Windows 12 bytes apart, two runs of three words 40 bytes apart, from byte 6, the
        // first into lane 1 of pair 0: windows 0..3 in (pair, lane) (0, 1), (1, 0), (1, 1).
        for (lane, pixels) in [(1usize, 3usize), (0, 4), (0, 1)] {
            let pair_words = 14;
            let mut dst = std::vec![0u32; 2 * pair_words + 1];
            assert!(copy_fields(
                &src,
                (6, 12, 40),
                (2, 3, pixels),
                &mut dst,
                (lane, pair_words)
            ));
            let mut want = std::vec![0u32; dst.len()];
            for q in 0..pixels {
                let base = (lane + q) / 2 * pair_words + (lane + q) % 2;
                for r in 0..2 {
                    for i in 0..3 {
                        want[base + 2 * (3 * r + i)] = word(6 + 12 * q + 40 * r + 4 * i);
                    }
                }
            }
            assert_eq!(dst, want, "lane {lane}, {pixels} pixels");
        }
        // The last window's last byte at the end of `src`: taken; one byte past it: refused.
        let mut dst = [0u32; 28];
        assert!(copy_fields(
            &src,
            (136, 12, 40),
            (2, 3, 2),
            &mut dst,
            (0, 14)
        ));
        assert!(!copy_fields(
            &src,
            (138, 12, 40),
            (2, 3, 2),
            &mut dst,
            (0, 14)
        ));
        // `dst` one word short of the last window's last word, or a window wider than a pair:
        // refused.
        assert!(!copy_fields(
            &src,
            (0, 12, 40),
            (2, 3, 2),
            &mut [0; 11],
            (0, 12)
        ));
        assert!(copy_fields(
            &src,
            (0, 12, 40),
            (2, 3, 2),
            &mut [0; 12],
            (0, 12)
        ));
        assert!(!copy_fields(
            &src,
            (0, 12, 40),
            (2, 3, 1),
            &mut [0; 28],
            (0, 10)
        ));
    }

    #[test]
    fn rows_land_in_every_second_word() {
        let src: Vec<u8> = (0..64u8).collect();
        let word = |at: usize| u32::from_le_bytes([0, 1, 2, 3].map(|k| src[at + k]));
        // Three runs of two words, 10 bytes apart, from byte 6 (not word-aligned).
        let mut dst = [0u32; 12];
        assert!(copy_rows(&src, 6, 10, 3, 2, &mut dst));
        let want = [6, 10, 16, 20, 26, 30].map(word);
        for (j, w) in want.iter().enumerate() {
            assert_eq!((dst[2 * j], dst[2 * j + 1]), (*w, 0));
        }
        // The last run's last byte at the end of `src`: taken; one byte past it: refused.
        assert!(copy_rows(&src, 56, 4, 1, 2, &mut dst));
        assert!(!copy_rows(&src, 58, 4, 1, 2, &mut [0; 4]));
        // `dst` one word short of the last store: refused.
        assert!(!copy_rows(&src, 0, 8, 2, 2, &mut [0; 6]));
        assert!(copy_rows(&src, 0, 8, 2, 2, &mut [0; 7]));
    }
}

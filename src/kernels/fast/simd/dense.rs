//! A dense layer's four rows on weights the host tool stored as int16
//! ([`DenseLayout::QuadsI16`](crate::format::DenseLayout)): no widening in the loop, one
//! activation word shared by four SMLADs.

/// One pass of [`smlad_4x1_quads`]'s loop: four activation words (two LDRDs into r4 and r6)
/// times sixteen weight words (four LDMs of four through r5) into the accumulators r8-r11.
#[cfg(icefold_dsp)]
macro_rules! quads_pass {
    () => {
        concat!(
            "ldrd r4, r6, [r12], #8\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r6, r8\n",
            "smlad r9, r1, r6, r9\n",
            "smlad r10, r2, r6, r10\n",
            "smlad r11, r3, r6, r11\n",
            "ldrd r4, r6, [r12], #8\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r6, r8\n",
            "smlad r9, r1, r6, r9\n",
            "smlad r10, r2, r6, r10\n",
            "smlad r11, r3, r6, r11"
        )
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
    }
}

//! The Arm DSP instructions the fast kernels use, as safe functions, with portable equivalents;
//! the f32 convolutions' register tiles ([`mla_4x2`], [`mla_4x1`]), VLDM/VMLA loops on an
//! Arm FPU (`cfg(icefold_vfp)`, see their docs); and the int8 convolutions' register tiles
//! ([`smlad_2x2`], [`sxtb16_2x2`] and their window forms), LDR/LDRD/SXTB16/SMLAD loops with
//! the DSP extension, each with a portable twin giving the same sums; and, in the submodule
//! `conv` (src/kernels/fast/simd/conv.rs, under this module's `unsafe` allowance and rules),
//! the four-output-channel tiles of the groups = 1 convolutions ([`smlad_4x1_pixels`],
//! [`smlad_4x1_run`], [`sxtb16_4x1_run`]), LDM/SMLAD loops.
//!
//! This is the runtime's only module with `unsafe` code: one `asm!` statement per DSP
//! instruction, one loop per register tile (f32 and int8), the depthwise 3x3 row pass
//! ([`dw3x3_row`]), pixel passes ([`dw3x3_pixel`], and in the submodule `depthwise` the
//! two-pixel [`dw3x3_pixel2_relu16`]) and output stage ([`requant_run`]) as DSP loops, the
//! 8-input-channel pointwise loop in the submodule `pointwise` ([`small_pixels`]), the max
//! pooling taps' loop in the submodule `elementwise` ([`max_taps`]), and [`i16_words`], which views a slice whose element type is `i16` (checked by
//! `TypeId`) at that type. The loops read memory: each
//! checks its slices' lengths in safe Rust first and reads only inside them (see each one's
//! safety comment). Each single instruction is sound for the same reasons: it reads and writes only the registers named as its
//! operands (`nomem`, `nostack`), has no side effect other than possibly setting the Q flag
//! (so no `preserves_flags` where the instruction may set it), and the instruction exists on
//! every core for which `cfg(icefold_dsp)` is set (build.rs: thumbv7em, or thumbv8m.main with
//! the `dsp` feature). On every other target the same functions are plain Rust with identical
//! results, so the fast kernels run, and are tested against the reference kernels, on the host.
//!
//! Lanes: a `u32` holding two signed 16-bit values has the low lane in bits 0..16.
//! SMLAD's sum wraps modulo 2^32 exactly like the portable `wrapping_add`s: the kernels only
//! call it where the quantization contract bounds the accumulator, so no sum wraps.
#![allow(unsafe_code)]

/// The low lane of `x` as i32.
#[cfg(not(icefold_dsp))]
#[inline(always)]
fn lo(x: u32) -> i32 {
    i32::from(x as u16 as i16)
}

/// The high lane of `x` as i32.
#[cfg(not(icefold_dsp))]
#[inline(always)]
fn hi(x: u32) -> i32 {
    i32::from((x >> 16) as u16 as i16)
}

/// SMLAD: `acc + lo(a)·lo(b) + hi(a)·hi(b)`.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(icefold_dsp)]
    {
        let r: i32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "smlad {r}, {a}, {b}, {acc}",
                r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc,
                options(pure, nomem, nostack),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        acc.wrapping_add(lo(a).wrapping_mul(lo(b)))
            .wrapping_add(hi(a).wrapping_mul(hi(b)))
    }
}

/// SMLABB and SMLATT: `(acc_lo + lo(a)·lo(b), acc_hi + hi(a)·hi(b))`, two independent
/// accumulators (two channels of a depthwise convolution).
#[inline(always)]
pub fn smla_lanes(a: u32, b: u32, [acc_lo, acc_hi]: [i32; 2]) -> [i32; 2] {
    #[cfg(icefold_dsp)]
    {
        let (r_lo, r_hi): (i32, i32);
        // SAFETY: register-only instructions present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "smlabb {lo}, {a}, {b}, {acc_lo}",
                "smlatt {hi}, {a}, {b}, {acc_hi}",
                // `lo` is written before the second instruction reads the inputs: `out`, so it
                // never shares a register with them.
                lo = out(reg) r_lo, hi = lateout(reg) r_hi, a = in(reg) a, b = in(reg) b,
                acc_lo = in(reg) acc_lo, acc_hi = in(reg) acc_hi,
                options(pure, nomem, nostack),
            );
        }
        [r_lo, r_hi]
    }
    #[cfg(not(icefold_dsp))]
    {
        [
            acc_lo.wrapping_add(lo(a).wrapping_mul(lo(b))),
            acc_hi.wrapping_add(hi(a).wrapping_mul(hi(b))),
        ]
    }
}

/// SXTB16: bytes 0 and 2 of `x`, sign-extended into the low and high lane.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "sxtb16 {r}, {x}",
                r = lateout(reg) r, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        pair(i32::from(x as u8 as i8), i32::from((x >> 16) as u8 as i8))
    }
}

/// SXTB16 with ROR #8: bytes 1 and 3 of `x`, sign-extended into the low and high lane.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "sxtb16 {r}, {x}, ror #8",
                r = lateout(reg) r, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        sxtb16(x.rotate_right(8))
    }
}

/// PKHBT with LSL #16: the low lane of `a` and the low lane of `b`, as (low, high).
#[inline(always)]
pub fn pack_lo(a: u32, b: u32) -> u32 {
    (a & 0xFFFF) | (b << 16)
}

/// PKHTB with ASR #16: the high lane of `a` and the high lane of `b`, as (low, high).
#[inline(always)]
pub fn pack_hi(a: u32, b: u32) -> u32 {
    (a >> 16) | (b & 0xFFFF_0000)
}

/// Two i32 values (each in the i16 range) as one lane pair.
#[inline(always)]
pub fn pair(low: i32, high: i32) -> u32 {
    (low as u32 & 0xFFFF) | ((high as u32) << 16)
}

/// The part of a convolution window one register-tile call covers: `rows` rows of `len`
/// values each, the rows of the activations `x_step` values apart and those of the weights
/// `w_step` apart (a row: the valid taps of one kernel row, `taps · in_c` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// Rows (at least 1 for any work).
    pub rows: usize,
    /// Values per row (at least 1 for any work).
    pub len: usize,
    /// Values from one activation row's start to the next's.
    pub x_step: usize,
    /// Values from one weight row's start to the next's.
    pub w_step: usize,
}

impl Rows {
    /// One row of `len` values.
    pub fn one(len: usize) -> Rows {
        Rows {
            rows: 1,
            len,
            x_step: len,
            w_step: len,
        }
    }

    /// Values a slice must hold for `step`: `(rows − 1) · step + len`, if it fits (the step
    /// at least `len`: rows do not overlap).
    fn extent(&self, step: usize) -> Option<usize> {
        if step < self.len {
            return None;
        }
        self.rows
            .checked_sub(1)?
            .checked_mul(step)?
            .checked_add(self.len)
    }

    /// Whether every slice holds the rows it is read at, and there is work.
    fn fits(&self, w: &[&[f32]], x: &[&[f32]]) -> bool {
        match (self.extent(self.w_step), self.extent(self.x_step)) {
            (Some(w_len), Some(x_len)) if self.len > 0 => {
                w.iter().all(|w| w.len() >= w_len) && x.iter().all(|x| x.len() >= x_len)
            }
            _ => false,
        }
    }
}

/// The `len` values of `s` from `at` (empty if out of range).
#[cfg(not(icefold_vfp))]
fn row(s: &[f32], at: usize, len: usize) -> &[f32] {
    s.get(at..at + len).unwrap_or_default()
}

/// Four weight rows and two pixels: `acc[k][p] + Σ_i w[k][i] · x[p][i]` over the values
/// `shape` selects (nothing if a slice is too short for it), each accumulator adding its
/// products in order (the order of the portable loop; VMLA rounds its product before adding,
/// like `a + w * x`, so the results are the same bit for bit). The register tile of the f32
/// convolutions.
///
/// On an Arm FPU (`icefold_vfp`): per quad six VLDMs and 32 VMLAs, 1.25 instructions per
/// multiply-accumulate (per leftover value of a row, six VLDMs and eight VMLAs), with one
/// call per convolution window (LLVM's own loop for the same
/// Rust takes 2.2: it adds an address per load, VLDR having no register offset).
#[inline(always)]
pub fn mla_4x2(acc: &mut [[f32; 2]; 4], w: [&[f32]; 4], x: [&[f32]; 2], shape: Rows) {
    if !shape.fits(&w, &x) {
        return;
    }
    #[cfg(icefold_vfp)]
    {
        let Rows {
            rows,
            len,
            x_step,
            w_step,
        } = shape;
        // SAFETY: `fits` checked that each slice holds its `rows` rows of `len` values `step`
        // apart (no overflow), which is exactly what each pointer walks over: per row `len`
        // values (VLDM with writeback: `len / 4` quads, then `len % 4` single values), then
        // the rest of the step. The asm only reads
        // that memory and reads and writes the accumulators at `acc` (eight f32). Every FP
        // register is pushed before use and restored at the end (Rust's asm! cannot name S
        // registers on a single-precision FPU: the `sreg` class asks for `vfp2`, which implies
        // double precision), and `acc` is pushed while it serves as the quad counter; so only
        // the named general registers and the flags change, and the stack is balanced. VPUSH,
        // VLDM, VMLA.F32, VSTM exist on every icefold_vfp core (an FPU with 32 S registers).
        unsafe {
            core::arch::asm!(
                "vpush {{s0-s31}}",
                "vldmia {acc}, {{s0-s7}}",
                "push {{{acc}}}",
                "1:",
                "lsrs {acc}, {len}, #2",
                "beq 3f",
                "2:",
                "vldmia {x0}!, {{s8-s11}}",
                "vldmia {x1}!, {{s12-s15}}",
                "vldmia {w0}!, {{s16-s19}}",
                "vldmia {w1}!, {{s20-s23}}",
                "vmla.f32 s0, s16, s8",
                "vmla.f32 s2, s20, s8",
                "vmla.f32 s1, s16, s12",
                "vmla.f32 s3, s20, s12",
                "vmla.f32 s0, s17, s9",
                "vmla.f32 s2, s21, s9",
                "vmla.f32 s1, s17, s13",
                "vmla.f32 s3, s21, s13",
                "vmla.f32 s0, s18, s10",
                "vmla.f32 s2, s22, s10",
                "vmla.f32 s1, s18, s14",
                "vmla.f32 s3, s22, s14",
                "vmla.f32 s0, s19, s11",
                "vmla.f32 s2, s23, s11",
                "vmla.f32 s1, s19, s15",
                "vmla.f32 s3, s23, s15",
                "vldmia {w2}!, {{s24-s27}}",
                "vldmia {w3}!, {{s28-s31}}",
                "vmla.f32 s4, s24, s8",
                "vmla.f32 s6, s28, s8",
                "vmla.f32 s5, s24, s12",
                "vmla.f32 s7, s28, s12",
                "vmla.f32 s4, s25, s9",
                "vmla.f32 s6, s29, s9",
                "vmla.f32 s5, s25, s13",
                "vmla.f32 s7, s29, s13",
                "vmla.f32 s4, s26, s10",
                "vmla.f32 s6, s30, s10",
                "vmla.f32 s5, s26, s14",
                "vmla.f32 s7, s30, s14",
                "vmla.f32 s4, s27, s11",
                "vmla.f32 s6, s31, s11",
                "vmla.f32 s5, s27, s15",
                "vmla.f32 s7, s31, s15",
                "subs {acc}, {acc}, #1",
                "bne 2b",
                "3:",
                "ands {acc}, {len}, #3",
                "beq 5f",
                "4:",
                "vldmia {x0}!, {{s8}}",
                "vldmia {x1}!, {{s12}}",
                "vldmia {w0}!, {{s16}}",
                "vldmia {w1}!, {{s20}}",
                "vldmia {w2}!, {{s24}}",
                "vldmia {w3}!, {{s28}}",
                "vmla.f32 s0, s16, s8",
                "vmla.f32 s1, s16, s12",
                "vmla.f32 s2, s20, s8",
                "vmla.f32 s3, s20, s12",
                "vmla.f32 s4, s24, s8",
                "vmla.f32 s5, s24, s12",
                "vmla.f32 s6, s28, s8",
                "vmla.f32 s7, s28, s12",
                "subs {acc}, {acc}, #1",
                "bne 4b",
                "5:",
                "add {x0}, {x0}, {x_skip}",
                "add {x1}, {x1}, {x_skip}",
                "add {w0}, {w0}, {w_skip}",
                "add {w1}, {w1}, {w_skip}",
                "add {w2}, {w2}, {w_skip}",
                "add {w3}, {w3}, {w_skip}",
                "subs {rows}, {rows}, #1",
                "bne 1b",
                "pop {{{acc}}}",
                "vstmia {acc}, {{s0-s7}}",
                "vpop {{s0-s31}}",
                x0 = inout(reg) x[0].as_ptr() => _,
                x1 = inout(reg) x[1].as_ptr() => _,
                w0 = inout(reg) w[0].as_ptr() => _,
                w1 = inout(reg) w[1].as_ptr() => _,
                w2 = inout(reg) w[2].as_ptr() => _,
                w3 = inout(reg) w[3].as_ptr() => _,
                rows = inout(reg) rows => _,
                len = in(reg) len,
                x_skip = in(reg) (x_step - len) * 4,
                w_skip = in(reg) (w_step - len) * 4,
                acc = inout(reg) acc.as_mut_ptr() => _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_vfp))]
    {
        // Per row: whole quads four products per accumulator at a time, then the rest, each
        // accumulator in index order (as the assembly).
        let [[mut a0, mut b0], [mut a1, mut b1], [mut a2, mut b2], [mut a3, mut b3]] = *acc;
        for r in 0..shape.rows {
            let [w0, w1, w2, w3] = w.map(|w| row(w, r * shape.w_step, shape.len));
            let [xa, xb] = x.map(|x| row(x, r * shape.x_step, shape.len));
            let values = xa.iter().zip(xb).zip(w0).zip(w1).zip(w2).zip(w3);
            for (((((xa, xb), w0), w1), w2), w3) in values {
                a0 += w0 * xa;
                b0 += w0 * xb;
                a1 += w1 * xa;
                b1 += w1 * xb;
                a2 += w2 * xa;
                b2 += w2 * xb;
                a3 += w3 * xa;
                b3 += w3 * xb;
            }
        }
        *acc = [[a0, b0], [a1, b1], [a2, b2], [a3, b3]];
    }
}

/// [`mla_4x2`] for one pixel: `acc[k] + Σ_i w[k][i] · x[i]` (per quad on an Arm FPU: five
/// VLDMs and 16 VMLAs; the dense layers' loop).
#[inline(always)]
pub fn mla_4x1(acc: &mut [f32; 4], w: [&[f32]; 4], x: &[f32], shape: Rows) {
    if !shape.fits(&w, &[x]) {
        return;
    }
    #[cfg(icefold_vfp)]
    {
        let Rows {
            rows,
            len,
            x_step,
            w_step,
        } = shape;
        // SAFETY: as in `mla_4x2`, with one pixel (four accumulators at `acc`).
        unsafe {
            core::arch::asm!(
                "vpush {{s0-s31}}",
                "vldmia {acc}, {{s0-s3}}",
                "push {{{acc}}}",
                "1:",
                "lsrs {acc}, {len}, #2",
                "beq 3f",
                "2:",
                "vldmia {x0}!, {{s8-s11}}",
                "vldmia {w0}!, {{s16-s19}}",
                "vldmia {w1}!, {{s20-s23}}",
                "vmla.f32 s0, s16, s8",
                "vmla.f32 s1, s20, s8",
                "vmla.f32 s0, s17, s9",
                "vmla.f32 s1, s21, s9",
                "vmla.f32 s0, s18, s10",
                "vmla.f32 s1, s22, s10",
                "vmla.f32 s0, s19, s11",
                "vmla.f32 s1, s23, s11",
                "vldmia {w2}!, {{s24-s27}}",
                "vldmia {w3}!, {{s28-s31}}",
                "vmla.f32 s2, s24, s8",
                "vmla.f32 s3, s28, s8",
                "vmla.f32 s2, s25, s9",
                "vmla.f32 s3, s29, s9",
                "vmla.f32 s2, s26, s10",
                "vmla.f32 s3, s30, s10",
                "vmla.f32 s2, s27, s11",
                "vmla.f32 s3, s31, s11",
                "subs {acc}, {acc}, #1",
                "bne 2b",
                "3:",
                "ands {acc}, {len}, #3",
                "beq 5f",
                "4:",
                "vldmia {x0}!, {{s8}}",
                "vldmia {w0}!, {{s16}}",
                "vldmia {w1}!, {{s20}}",
                "vldmia {w2}!, {{s24}}",
                "vldmia {w3}!, {{s28}}",
                "vmla.f32 s0, s16, s8",
                "vmla.f32 s1, s20, s8",
                "vmla.f32 s2, s24, s8",
                "vmla.f32 s3, s28, s8",
                "subs {acc}, {acc}, #1",
                "bne 4b",
                "5:",
                "add {x0}, {x0}, {x_skip}",
                "add {w0}, {w0}, {w_skip}",
                "add {w1}, {w1}, {w_skip}",
                "add {w2}, {w2}, {w_skip}",
                "add {w3}, {w3}, {w_skip}",
                "subs {rows}, {rows}, #1",
                "bne 1b",
                "pop {{{acc}}}",
                "vstmia {acc}, {{s0-s3}}",
                "vpop {{s0-s31}}",
                x0 = inout(reg) x.as_ptr() => _,
                w0 = inout(reg) w[0].as_ptr() => _,
                w1 = inout(reg) w[1].as_ptr() => _,
                w2 = inout(reg) w[2].as_ptr() => _,
                w3 = inout(reg) w[3].as_ptr() => _,
                rows = inout(reg) rows => _,
                len = in(reg) len,
                x_skip = in(reg) (x_step - len) * 4,
                w_skip = in(reg) (w_step - len) * 4,
                acc = inout(reg) acc.as_mut_ptr() => _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_vfp))]
    {
        let [mut a0, mut a1, mut a2, mut a3] = *acc;
        for r in 0..shape.rows {
            let [w0, w1, w2, w3] = w.map(|w| row(w, r * shape.w_step, shape.len));
            let x = row(x, r * shape.x_step, shape.len);
            for ((((x, w0), w1), w2), w3) in x.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
                a0 += w0 * x;
                a1 += w1 * x;
                a2 += w2 * x;
                a3 += w3 * x;
            }
        }
        *acc = [a0, a1, a2, a3];
    }
}

/// The taps of a depthwise window one [`mla_taps`] call covers: `rows` × `cols` taps, the
/// activations `x_col` values from one column to the next and `x_row` from one row to the
/// next, the weights four per tap, `w_row` values from one row's first to the next's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taps {
    /// Kernel rows.
    pub rows: usize,
    /// Kernel columns per row.
    pub cols: usize,
    /// Values between an activation tap and the next column's.
    pub x_col: usize,
    /// Values between an activation row's first tap and the next row's.
    pub x_row: usize,
    /// Values between a weight row's first tap and the next row's (at least `4 · cols`).
    pub w_row: usize,
}

impl Taps {
    /// Whether `x` and `w` hold every tap read, and there is work.
    fn fits(&self, x: &[f32], w: &[f32]) -> bool {
        let extent = || {
            let last_row = self.rows.checked_sub(1)?;
            let last_col = self.cols.checked_sub(1)?;
            let x_len = (last_row.checked_mul(self.x_row)?)
                .checked_add(last_col.checked_mul(self.x_col)?)?
                .checked_add(4)?;
            let w_len =
                (last_row.checked_mul(self.w_row)?).checked_add(self.cols.checked_mul(4)?)?;
            Some((x_len, w_len, self.cols * 4 <= self.w_row))
        };
        matches!(extent(), Some((x_len, w_len, true)) if x.len() >= x_len && w.len() >= w_len)
    }
}

/// Four channels of a depthwise window: `acc[k] + Σ_taps w[tap][k] · x[tap][k]`, the taps in
/// row-major order (nothing if a slice is too short for `taps`). On an Arm FPU
/// (`icefold_vfp`) each tap is two VLDMs, an address add and four VMLAs.
#[inline(always)]
pub fn mla_taps(acc: &mut [f32; 4], x: &[f32], w: &[f32], taps: Taps) {
    if !taps.fits(x, w) {
        return;
    }
    #[cfg(icefold_vfp)]
    {
        // SAFETY: `fits` checked that `x` holds four values at every tap `row · x_row + col ·
        // x_col` and `w` four at every `row · w_row + 4 · col` (no overflow), which is what
        // the asm reads (the column pointer restarts at each row's first tap; the weight
        // pointer advances four per tap, then by the rest of `w_row`). It reads and writes
        // the four accumulators at `acc`, pushes every FP register before use and restores
        // them (see `mla_4x2`), and pushes `acc` while it counts columns: only the named
        // general registers and the flags change.
        unsafe {
            core::arch::asm!(
                "vpush {{s0-s31}}",
                "vldmia {acc}, {{s0-s3}}",
                "push {{{acc}}}",
                "1:",
                "mov {acc}, {cols}",
                "mov {xc}, {x}",
                "2:",
                "vldmia {xc}, {{s8-s11}}",
                "add {xc}, {xc}, {x_col}",
                "vldmia {w}!, {{s16-s19}}",
                "vmla.f32 s0, s16, s8",
                "vmla.f32 s1, s17, s9",
                "vmla.f32 s2, s18, s10",
                "vmla.f32 s3, s19, s11",
                "subs {acc}, {acc}, #1",
                "bne 2b",
                "add {x}, {x}, {x_row}",
                "add {w}, {w}, {w_skip}",
                "subs {rows}, {rows}, #1",
                "bne 1b",
                "pop {{{acc}}}",
                "vstmia {acc}, {{s0-s3}}",
                "vpop {{s0-s31}}",
                x = inout(reg) x.as_ptr() => _,
                xc = out(reg) _,
                w = inout(reg) w.as_ptr() => _,
                rows = inout(reg) taps.rows => _,
                cols = in(reg) taps.cols,
                x_col = in(reg) taps.x_col * 4,
                x_row = in(reg) taps.x_row * 4,
                w_skip = in(reg) (taps.w_row - 4 * taps.cols) * 4,
                acc = inout(reg) acc.as_mut_ptr() => _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_vfp))]
    {
        for r in 0..taps.rows {
            for c in 0..taps.cols {
                let x_at = r * taps.x_row + c * taps.x_col;
                let w_at = r * taps.w_row + 4 * c;
                let (Some(x), Some(w)) = (x.get(x_at..x_at + 4), w.get(w_at..w_at + 4)) else {
                    return;
                };
                for ((a, x), w) in acc.iter_mut().zip(x).zip(w) {
                    *a += w * x;
                }
            }
        }
    }
}

/// Two output channels × two pixels on int16 lane pairs: `acc[2p + k] + Σ_j smlad(w[k][j],
/// x[p][j])` over the words all four slices have (`n`, the shortest length), the tile of the
/// 16×8 regular and pointwise convolutions. `w[k]`: channel `k`'s weights widened to lane pairs
/// in the order of the activations' words (`(v0, v1), (v2, v3), ...`), so no lane is repacked in
/// the loop.
///
/// With the DSP extension (`icefold_dsp`): per four words (32 products) sixteen single loads
/// (all four pointers post-incremented, so no address arithmetic), sixteen SMLADs and the loop's
/// SUBS/BNE, 34 instructions; the last `n % 4` words in Rust. Twelve general registers are
/// live in the loop (four pointers, the count, four accumulators, two activations and a
/// weight): every one Rust's `asm!` may allocate on Thumb, which is why the weights are single
/// loads rather than LDRDs (a second weight register does not fit).
#[inline(always)]
pub fn smlad_2x2(w: [&[u32]; 2], x: [&[u32]; 2], acc: [i32; 4]) -> [i32; 4] {
    let n = w[0].len().min(w[1].len()).min(x[0].len()).min(x[1].len());
    #[allow(unused_mut)]
    let mut done = 0;
    let [mut a0, mut a1, mut b0, mut b1] = acc;
    #[cfg(icefold_dsp)]
    {
        let quads = n / 4;
        if quads > 0 {
            // SAFETY: each of the four pointers starts at a slice holding at least `n` words
            // (`n` is the shortest length), and the loop reads `4 · quads ≤ n` consecutive
            // words through each, post-incrementing by one word per load: every load is
            // inside its slice. The pointers are `u32` slices' so the word loads are aligned.
            // Only the named registers and the flags change (no stack, no stores): `nostack`.
            // LDR, SMLAD, SUBS and BNE exist on every icefold_dsp core (module docs).
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldr {w}, [{p0}], #4",
                    "ldr {xa}, [{pa}], #4",
                    "ldr {xb}, [{pb}], #4",
                    "smlad {a0}, {w}, {xa}, {a0}",
                    "smlad {b0}, {w}, {xb}, {b0}",
                    "ldr {w}, [{p1}], #4",
                    "smlad {a1}, {w}, {xa}, {a1}",
                    "smlad {b1}, {w}, {xb}, {b1}",
                    "ldr {w}, [{p0}], #4",
                    "ldr {xa}, [{pa}], #4",
                    "ldr {xb}, [{pb}], #4",
                    "smlad {a0}, {w}, {xa}, {a0}",
                    "smlad {b0}, {w}, {xb}, {b0}",
                    "ldr {w}, [{p1}], #4",
                    "smlad {a1}, {w}, {xa}, {a1}",
                    "smlad {b1}, {w}, {xb}, {b1}",
                    "ldr {w}, [{p0}], #4",
                    "ldr {xa}, [{pa}], #4",
                    "ldr {xb}, [{pb}], #4",
                    "smlad {a0}, {w}, {xa}, {a0}",
                    "smlad {b0}, {w}, {xb}, {b0}",
                    "ldr {w}, [{p1}], #4",
                    "smlad {a1}, {w}, {xa}, {a1}",
                    "smlad {b1}, {w}, {xb}, {b1}",
                    "ldr {w}, [{p0}], #4",
                    "ldr {xa}, [{pa}], #4",
                    "ldr {xb}, [{pb}], #4",
                    "smlad {a0}, {w}, {xa}, {a0}",
                    "smlad {b0}, {w}, {xb}, {b0}",
                    "ldr {w}, [{p1}], #4",
                    "smlad {a1}, {w}, {xa}, {a1}",
                    "smlad {b1}, {w}, {xb}, {b1}",
                    "subs {cnt}, {cnt}, #1",
                    "bne 2b",
                    p0 = inout(reg) w[0].as_ptr() => _,
                    p1 = inout(reg) w[1].as_ptr() => _,
                    pa = inout(reg) x[0].as_ptr() => _,
                    pb = inout(reg) x[1].as_ptr() => _,
                    cnt = inout(reg) quads => _,
                    a0 = inout(reg) a0,
                    a1 = inout(reg) a1,
                    b0 = inout(reg) b0,
                    b1 = inout(reg) b1,
                    w = out(reg) _,
                    xa = out(reg) _,
                    xb = out(reg) _,
                    options(nostack, readonly),
                );
            }
            done = 4 * quads;
        }
    }
    // The rest (everything in portable builds), in index order.
    for j in done..n {
        let (Some(w0), Some(w1), Some(xa), Some(xb)) =
            (w[0].get(j), w[1].get(j), x[0].get(j), x[1].get(j))
        else {
            break;
        };
        a0 = smlad(*w0, *xa, a0);
        b0 = smlad(*w0, *xb, b0);
        a1 = smlad(*w1, *xa, a1);
        b1 = smlad(*w1, *xb, b1);
    }
    [a0, a1, b0, b1]
}

/// Four int8 weights of each of two output channels widened once for [`sxtb16_2x2`]: per run
/// of four products the words `(w0, w2)`, `(w1, w3)` of channel 0, then the same of channel 1
/// (the lane order [`sxtb16`] and [`sxtb16_ror8`] give four int8 activations).
#[inline(always)]
pub fn widen_quads(w0: &[i8; 4], w1: &[i8; 4]) -> [u32; 4] {
    let even_odd = |w: &[i8; 4]| {
        let [v0, v1, v2, v3] = w.map(i32::from);
        (pair(v0, v2), pair(v1, v3))
    };
    let ((e0, o0), (e1, o1)) = (even_odd(w0), even_odd(w1));
    [e0, o0, e1, o1]
}

/// Two output channels × two pixels on int8 activations: `acc[2p + k] + Σ_i w[k][i] · x[p][i]`
/// over the runs of four values `x[p]` holds (one word each: four int8 values, little-endian)
/// and `w` holds (four words each, [`widen_quads`]): `n` runs, the fewest any slice has. The
/// tile of the int8 regular convolutions.
///
/// With the DSP extension (`icefold_dsp`): per run (16 products) two single loads and two
/// SXTB16 pairs (each pixel's four values widened once), three LDRDs (channel 1's weights
/// serve pixel A, then pixel B, then channel 0's are reloaded for pixel B), eight SMLADs: 17
/// instructions, two runs per loop pass (36 with SUBS/BNE); an odd last run in Rust. Twelve
/// general registers live (three pointers, the count, four accumulators, an activation word
/// and its even lanes, two weights), every one `asm!` may allocate on Thumb.
#[inline(always)]
pub fn sxtb16_2x2(w: &[u32], x: [&[u32]; 2], acc: [i32; 4]) -> [i32; 4] {
    let n = (w.len() / 4).min(x[0].len()).min(x[1].len());
    #[allow(unused_mut)]
    let mut done = 0;
    let [mut a0, mut a1, mut b0, mut b1] = acc;
    #[cfg(icefold_dsp)]
    {
        let pairs = n / 2;
        if pairs > 0 {
            // SAFETY: `w` holds at least `4 · n` words and each `x[p]` at least `n`; the loop
            // reads the first `2 · pairs ≤ n` runs: per run one word through each activation
            // pointer (post-incremented) and the run's four weight words (at offsets 0..16
            // bytes, the pointer post-incremented by 16 on the last LDRD): every load is inside
            // its slice, and word-aligned (`u32` slices; LDRD needs only word alignment). Only
            // the named registers and the flags change (no stack, no stores): `nostack`.
            // LDR, LDRD, SXTB16, SMLAD, SUBS and BNE exist on every icefold_dsp core.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldr {x}, [{pa}], #4",
                    "ldrd {w0}, {w1}, [{pw}]",
                    "sxtb16 {t}, {x}",
                    "sxtb16 {x}, {x}, ror #8",
                    "smlad {a0}, {w0}, {t}, {a0}",
                    "smlad {a0}, {w1}, {x}, {a0}",
                    "ldrd {w0}, {w1}, [{pw}, #8]",
                    "smlad {a1}, {w0}, {t}, {a1}",
                    "smlad {a1}, {w1}, {x}, {a1}",
                    "ldr {x}, [{pb}], #4",
                    "sxtb16 {t}, {x}",
                    "sxtb16 {x}, {x}, ror #8",
                    "smlad {b1}, {w0}, {t}, {b1}",
                    "smlad {b1}, {w1}, {x}, {b1}",
                    "ldrd {w0}, {w1}, [{pw}], #16",
                    "smlad {b0}, {w0}, {t}, {b0}",
                    "smlad {b0}, {w1}, {x}, {b0}",
                    "ldr {x}, [{pa}], #4",
                    "ldrd {w0}, {w1}, [{pw}]",
                    "sxtb16 {t}, {x}",
                    "sxtb16 {x}, {x}, ror #8",
                    "smlad {a0}, {w0}, {t}, {a0}",
                    "smlad {a0}, {w1}, {x}, {a0}",
                    "ldrd {w0}, {w1}, [{pw}, #8]",
                    "smlad {a1}, {w0}, {t}, {a1}",
                    "smlad {a1}, {w1}, {x}, {a1}",
                    "ldr {x}, [{pb}], #4",
                    "sxtb16 {t}, {x}",
                    "sxtb16 {x}, {x}, ror #8",
                    "smlad {b1}, {w0}, {t}, {b1}",
                    "smlad {b1}, {w1}, {x}, {b1}",
                    "ldrd {w0}, {w1}, [{pw}], #16",
                    "smlad {b0}, {w0}, {t}, {b0}",
                    "smlad {b0}, {w1}, {x}, {b0}",
                    "subs {cnt}, {cnt}, #1",
                    "bne 2b",
                    pw = inout(reg) w.as_ptr() => _,
                    pa = inout(reg) x[0].as_ptr() => _,
                    pb = inout(reg) x[1].as_ptr() => _,
                    cnt = inout(reg) pairs => _,
                    a0 = inout(reg) a0,
                    a1 = inout(reg) a1,
                    b0 = inout(reg) b0,
                    b1 = inout(reg) b1,
                    x = out(reg) _,
                    t = out(reg) _,
                    w0 = out(reg) _,
                    w1 = out(reg) _,
                    options(nostack, readonly),
                );
            }
            done = 2 * pairs;
        }
    }
    // The rest (everything in portable builds), run by run.
    for j in done..n {
        let (Some(&[e0, o0, e1, o1]), Some(xa), Some(xb)) = (
            w.get(4 * j..).and_then(|w| w.first_chunk::<4>()),
            x[0].get(j),
            x[1].get(j),
        ) else {
            break;
        };
        let (xa_even, xa_odd) = (sxtb16(*xa), sxtb16_ror8(*xa));
        let (xb_even, xb_odd) = (sxtb16(*xb), sxtb16_ror8(*xb));
        a0 = smlad(o0, xa_odd, smlad(e0, xa_even, a0));
        a1 = smlad(o1, xa_odd, smlad(e1, xa_even, a1));
        b0 = smlad(o0, xb_odd, smlad(e0, xb_even, b0));
        b1 = smlad(o1, xb_odd, smlad(e1, xb_even, b1));
    }
    [a0, a1, b0, b1]
}

/// The rows of a convolution window for [`smlad_2x2_rows`] and [`sxtb16_2x2_rows`]: `rows`
/// rows of `len` activation words each, `x_step` words from one row's start to the next's;
/// the weights of consecutive rows are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Rows (at least 1).
    pub rows: usize,
    /// Activation words per row (a multiple of the tile's loop pass: 4 for
    /// [`smlad_2x2_rows`], 2 for [`sxtb16_2x2_rows`]).
    pub len: usize,
    /// Words from one activation row's start to the next's (at least `len`).
    pub x_step: usize,
}

impl Window {
    /// Whether the shape is one the loops take (`len` a nonzero multiple of `pass`, rows that
    /// do not overlap) and every `x[p]` holds its rows: `(rows − 1) · x_step + len` words.
    fn fits(&self, pass: usize, x: [&[u32]; 2]) -> bool {
        let extent = self
            .rows
            .checked_sub(1)
            .and_then(|r| r.checked_mul(self.x_step))
            .and_then(|r| r.checked_add(self.len));
        match extent {
            Some(need) => {
                self.len > 0
                    && self.len % pass == 0
                    && self.x_step >= self.len
                    && x.iter().all(|x| x.len() >= need)
            }
            None => false,
        }
    }

    /// The word offset of row `r`'s start.
    #[cfg(not(icefold_dsp))]
    fn row(&self, r: usize) -> core::ops::Range<usize> {
        r * self.x_step..r * self.x_step + self.len
    }
}

/// [`smlad_2x2`] over every row of a window in one call: `w[k]` holds channel `k`'s
/// `rows · len` weight words (the rows one after the other), `x[p]` pixel `p`'s window from its
/// first word. `None` (nothing computed) for a shape [`Window`] does not take or slices too
/// short for it; the caller then sums row by row.
///
/// With the DSP extension, the loop of [`smlad_2x2`] per row (34 instructions per 32
/// products), and per row about ten instructions more: the loop count and the rows left live
/// in a two-word block on the stack (every register is taken in the loop), and the activation
/// pointers step to the next row. One call and one slice check per pixel pair and channel
/// pair, rather than per kernel row (about 80 instructions each in the firmware).
#[inline(always)]
pub fn smlad_2x2_rows(
    w: [&[u32]; 2],
    x: [&[u32]; 2],
    window: Window,
    acc: [i32; 4],
) -> Option<[i32; 4]> {
    let need = window.rows.checked_mul(window.len)?;
    if !window.fits(4, x) || w.iter().any(|w| w.len() < need) {
        return None;
    }
    #[cfg(icefold_dsp)]
    {
        let [mut a0, mut a1, mut b0, mut b1] = acc;
        // Loop passes per row, rows left, bytes from a row's end to the next row's start.
        let mut block = [
            window.len / 4,
            window.rows,
            (window.x_step - window.len) * 4,
        ];
        // SAFETY: `fits` checked that `len` is a nonzero multiple of 4, that rows do not
        // overlap, and that each `x[p]` holds `(rows − 1) · x_step + len` words, and each
        // `w[k]` holds `rows · len`: per row the loop reads `len` consecutive words through
        // each pointer (post-incremented), then the activation pointers skip the rest of the
        // step (`x_step − len` words) and the weight pointers go on (the rows are contiguous):
        // every load is inside its slice and word-aligned. The three-word block is read
        // through `cnt`'s initial value, kept on the stack (pushed, then dropped: the stack is
        // balanced) while `cnt` counts; its second word (rows left) is written. Only the named registers, the
        // flags and `block` change. LDR, STR, PUSH, POP, SMLAD, ADD, SUBS and BNE exist on
        // every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "push {{{cnt}}}",
                "1:",
                "ldr {cnt}, [sp]",
                "ldr {cnt}, [{cnt}]",
                "2:",
                "ldr {w}, [{p0}], #4",
                "ldr {xa}, [{pa}], #4",
                "ldr {xb}, [{pb}], #4",
                "smlad {a0}, {w}, {xa}, {a0}",
                "smlad {b0}, {w}, {xb}, {b0}",
                "ldr {w}, [{p1}], #4",
                "smlad {a1}, {w}, {xa}, {a1}",
                "smlad {b1}, {w}, {xb}, {b1}",
                "ldr {w}, [{p0}], #4",
                "ldr {xa}, [{pa}], #4",
                "ldr {xb}, [{pb}], #4",
                "smlad {a0}, {w}, {xa}, {a0}",
                "smlad {b0}, {w}, {xb}, {b0}",
                "ldr {w}, [{p1}], #4",
                "smlad {a1}, {w}, {xa}, {a1}",
                "smlad {b1}, {w}, {xb}, {b1}",
                "ldr {w}, [{p0}], #4",
                "ldr {xa}, [{pa}], #4",
                "ldr {xb}, [{pb}], #4",
                "smlad {a0}, {w}, {xa}, {a0}",
                "smlad {b0}, {w}, {xb}, {b0}",
                "ldr {w}, [{p1}], #4",
                "smlad {a1}, {w}, {xa}, {a1}",
                "smlad {b1}, {w}, {xb}, {b1}",
                "ldr {w}, [{p0}], #4",
                "ldr {xa}, [{pa}], #4",
                "ldr {xb}, [{pb}], #4",
                "smlad {a0}, {w}, {xa}, {a0}",
                "smlad {b0}, {w}, {xb}, {b0}",
                "ldr {w}, [{p1}], #4",
                "smlad {a1}, {w}, {xa}, {a1}",
                "smlad {b1}, {w}, {xb}, {b1}",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                "ldr {w}, [sp]",
                "ldr {xa}, [{w}, #4]",
                "subs {xa}, {xa}, #1",
                "str {xa}, [{w}, #4]",
                "beq 3f",
                "ldr {xa}, [{w}, #8]",
                "add {pa}, {pa}, {xa}",
                "add {pb}, {pb}, {xa}",
                "b 1b",
                "3:",
                "add sp, sp, #4",
                p0 = inout(reg) w[0].as_ptr() => _,
                p1 = inout(reg) w[1].as_ptr() => _,
                pa = inout(reg) x[0].as_ptr() => _,
                pb = inout(reg) x[1].as_ptr() => _,
                cnt = inout(reg) block.as_mut_ptr() => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                b0 = inout(reg) b0,
                b1 = inout(reg) b1,
                w = out(reg) _,
                xa = out(reg) _,
                xb = out(reg) _,
                options(),
            );
        }
        Some([a0, a1, b0, b1])
    }
    #[cfg(not(icefold_dsp))]
    {
        let mut acc = acc;
        for r in 0..window.rows {
            let ws = w.map(|w| {
                w.get(r * window.len..(r + 1) * window.len)
                    .unwrap_or_default()
            });
            let xs = x.map(|x| x.get(window.row(r)).unwrap_or_default());
            acc = smlad_2x2(ws, xs, acc);
        }
        Some(acc)
    }
}

/// [`sxtb16_2x2`] over every row of a window in one call: `w` holds the `rows · len` runs'
/// weight words ([`widen_quads`], the rows one after the other), `x[p]` pixel `p`'s window from
/// its first word (`len` words of four int8 values per row). `None` (nothing computed) for a
/// shape [`Window`] does not take or slices too short for it; the caller then sums row by row.
///
/// With the DSP extension, the loop of [`sxtb16_2x2`] per row (36 instructions per 32
/// products) and about ten instructions per row, as in [`smlad_2x2_rows`].
#[inline(always)]
pub fn sxtb16_2x2_rows(
    w: &[u32],
    x: [&[u32]; 2],
    window: Window,
    acc: [i32; 4],
) -> Option<[i32; 4]> {
    let need = window.rows.checked_mul(window.len)?.checked_mul(4)?;
    if !window.fits(2, x) || w.len() < need {
        return None;
    }
    #[cfg(icefold_dsp)]
    {
        let [mut a0, mut a1, mut b0, mut b1] = acc;
        // Loop passes per row, rows left, bytes from a row's end to the next row's start.
        let mut block = [
            window.len / 2,
            window.rows,
            (window.x_step - window.len) * 4,
        ];
        // SAFETY: `fits` checked that `len` is a nonzero even number, that rows do not
        // overlap, that each `x[p]` holds `(rows − 1) · x_step + len` words and `w` holds
        // `4 · rows · len`: per row the loop reads `len` consecutive words through each
        // activation pointer (post-incremented) and `4 · len` through the weight pointer (the
        // LDRDs at offsets 0 and 8, then 0 post-incremented by 16), then the activation
        // pointers skip the rest of the step: every load is inside its slice and word-aligned.
        // The three-word block is read through `cnt`'s initial value, kept on the stack
        // (pushed, then dropped: the stack is balanced) while `cnt` counts; its second word
        // (rows left) is written. Only the named registers, the flags and `block` change. LDR,
        // LDRD, STR, PUSH, SXTB16, SMLAD, ADD, SUBS and BNE exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "push {{{cnt}}}",
                "1:",
                "ldr {cnt}, [sp]",
                "ldr {cnt}, [{cnt}]",
                "2:",
                "ldr {x}, [{pa}], #4",
                "ldrd {w0}, {w1}, [{pw}]",
                "sxtb16 {t}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlad {a0}, {w0}, {t}, {a0}",
                "smlad {a0}, {w1}, {x}, {a0}",
                "ldrd {w0}, {w1}, [{pw}, #8]",
                "smlad {a1}, {w0}, {t}, {a1}",
                "smlad {a1}, {w1}, {x}, {a1}",
                "ldr {x}, [{pb}], #4",
                "sxtb16 {t}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlad {b1}, {w0}, {t}, {b1}",
                "smlad {b1}, {w1}, {x}, {b1}",
                "ldrd {w0}, {w1}, [{pw}], #16",
                "smlad {b0}, {w0}, {t}, {b0}",
                "smlad {b0}, {w1}, {x}, {b0}",
                "ldr {x}, [{pa}], #4",
                "ldrd {w0}, {w1}, [{pw}]",
                "sxtb16 {t}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlad {a0}, {w0}, {t}, {a0}",
                "smlad {a0}, {w1}, {x}, {a0}",
                "ldrd {w0}, {w1}, [{pw}, #8]",
                "smlad {a1}, {w0}, {t}, {a1}",
                "smlad {a1}, {w1}, {x}, {a1}",
                "ldr {x}, [{pb}], #4",
                "sxtb16 {t}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlad {b1}, {w0}, {t}, {b1}",
                "smlad {b1}, {w1}, {x}, {b1}",
                "ldrd {w0}, {w1}, [{pw}], #16",
                "smlad {b0}, {w0}, {t}, {b0}",
                "smlad {b0}, {w1}, {x}, {b0}",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                "ldr {w0}, [sp]",
                "ldr {w1}, [{w0}, #4]",
                "subs {w1}, {w1}, #1",
                "str {w1}, [{w0}, #4]",
                "beq 3f",
                "ldr {w1}, [{w0}, #8]",
                "add {pa}, {pa}, {w1}",
                "add {pb}, {pb}, {w1}",
                "b 1b",
                "3:",
                "add sp, sp, #4",
                pw = inout(reg) w.as_ptr() => _,
                pa = inout(reg) x[0].as_ptr() => _,
                pb = inout(reg) x[1].as_ptr() => _,
                cnt = inout(reg) block.as_mut_ptr() => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                b0 = inout(reg) b0,
                b1 = inout(reg) b1,
                x = out(reg) _,
                t = out(reg) _,
                w0 = out(reg) _,
                w1 = out(reg) _,
                options(),
            );
        }
        Some([a0, a1, b0, b1])
    }
    #[cfg(not(icefold_dsp))]
    {
        let mut acc = acc;
        for r in 0..window.rows {
            let ws = w.get(4 * r * window.len..4 * (r + 1) * window.len);
            let xs = x.map(|x| x.get(window.row(r)).unwrap_or_default());
            acc = sxtb16_2x2(ws.unwrap_or_default(), xs, acc);
        }
        Some(acc)
    }
}

/// Two output channels × one pixel over the rows of a window on int16 lane pairs (the border
/// pixels of the 16×8 regular convolutions, whose windows are clipped to the input):
/// `acc[k] + Σ_rows Σ_j smlad(w[k][j], x[j])` over `shape.rows` rows of `shape.len` words,
/// the activation rows `shape.x_step` words apart and each channel's weight rows
/// `shape.w_step`. `None` (nothing computed) unless `len` is a nonzero multiple of 4 and every
/// slice holds its rows.
///
/// With the DSP extension, per four words (16 products) two LDRDs of activations, four of
/// weights, eight SMLADs, and per pass SUBS/BNE: 16 instructions; about ten more per row (the
/// loop's constants in a four-word block: three registers are free, not four).
#[inline(always)]
pub fn smlad_2x1_rows(w: [&[u32]; 2], x: &[u32], shape: Rows, acc: [i32; 2]) -> Option<[i32; 2]> {
    let (Some(w_len), Some(x_len)) = (shape.extent(shape.w_step), shape.extent(shape.x_step))
    else {
        return None;
    };
    if shape.len == 0 || shape.len % 4 != 0 || x.len() < x_len || w.iter().any(|w| w.len() < w_len)
    {
        return None;
    }
    #[cfg(icefold_dsp)]
    {
        let [mut a0, mut a1] = acc;
        // Loop passes per row, then the bytes from a row's end to the next row's start for the
        // activations and for the weights.
        let block = [
            shape.len / 4,
            (shape.x_step - shape.len) * 4,
            (shape.w_step - shape.len) * 4,
        ];
        // SAFETY: the checks above: `len` is a nonzero multiple of 4, the steps at least
        // `len`, `x` holds `(rows − 1) · x_step + len` words and each `w[k]`
        // `(rows − 1) · w_step + len`; per row the loop reads `len` consecutive words through
        // each pointer (LDRD post-incremented by 8), then each pointer skips the rest of its
        // step: every load is inside its slice and word-aligned. `block` is only read. Only
        // the named registers and the flags change. LDR, LDRD, SMLAD, ADD, SUBS and BNE exist
        // on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "1:",
                "ldr {cnt}, [{blk}]",
                "2:",
                "ldrd {x0}, {x1}, [{pa}], #8",
                "ldrd {wa}, {wb}, [{p0}], #8",
                "smlad {a0}, {wa}, {x0}, {a0}",
                "smlad {a0}, {wb}, {x1}, {a0}",
                "ldrd {wa}, {wb}, [{p1}], #8",
                "smlad {a1}, {wa}, {x0}, {a1}",
                "smlad {a1}, {wb}, {x1}, {a1}",
                "ldrd {x0}, {x1}, [{pa}], #8",
                "ldrd {wa}, {wb}, [{p0}], #8",
                "smlad {a0}, {wa}, {x0}, {a0}",
                "smlad {a0}, {wb}, {x1}, {a0}",
                "ldrd {wa}, {wb}, [{p1}], #8",
                "smlad {a1}, {wa}, {x0}, {a1}",
                "smlad {a1}, {wb}, {x1}, {a1}",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                "subs {rows}, {rows}, #1",
                "beq 3f",
                "ldrd {x0}, {x1}, [{blk}, #4]",
                "add {pa}, {pa}, {x0}",
                "add {p0}, {p0}, {x1}",
                "add {p1}, {p1}, {x1}",
                "b 1b",
                "3:",
                pa = inout(reg) x.as_ptr() => _,
                p0 = inout(reg) w[0].as_ptr() => _,
                p1 = inout(reg) w[1].as_ptr() => _,
                rows = inout(reg) shape.rows => _,
                blk = in(reg) block.as_ptr(),
                cnt = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                x0 = out(reg) _,
                x1 = out(reg) _,
                wa = out(reg) _,
                wb = out(reg) _,
                options(nostack, readonly),
            );
        }
        Some([a0, a1])
    }
    #[cfg(not(icefold_dsp))]
    {
        let [mut a0, mut a1] = acc;
        for r in 0..shape.rows {
            let xs = x
                .get(r * shape.x_step..r * shape.x_step + shape.len)
                .unwrap_or_default();
            let ws = w.map(|w| {
                w.get(r * shape.w_step..r * shape.w_step + shape.len)
                    .unwrap_or_default()
            });
            for ((x, w0), w1) in xs.iter().zip(ws[0]).zip(ws[1]) {
                a0 = smlad(*w0, *x, a0);
                a1 = smlad(*w1, *x, a1);
            }
        }
        Some([a0, a1])
    }
}

/// [`smlad_2x1_rows`] on int8 activations (words of four values) and weights widened by
/// [`widen_quads`]: `shape.len` runs of four values per row, the activation rows
/// `shape.x_step` words apart, the weight rows `shape.w_step` runs (four words each). `None`
/// unless `len` is a nonzero even number and every slice holds its rows.
///
/// With the DSP extension, per two runs (16 products) two loads and two SXTB16 pairs, four
/// LDRDs, eight SMLADs, SUBS/BNE: 20 instructions; about ten more per row.
#[inline(always)]
pub fn sxtb16_2x1_rows(w: &[u32], x: &[u32], shape: Rows, acc: [i32; 2]) -> Option<[i32; 2]> {
    let (Some(w_runs), Some(x_len)) = (shape.extent(shape.w_step), shape.extent(shape.x_step))
    else {
        return None;
    };
    let w_len = w_runs.checked_mul(4)?;
    if shape.len == 0 || shape.len % 2 != 0 || x.len() < x_len || w.len() < w_len {
        return None;
    }
    #[cfg(icefold_dsp)]
    {
        let [mut a0, mut a1] = acc;
        // As in `smlad_2x1_rows`.
        let block = [
            shape.len / 2,
            (shape.x_step - shape.len) * 4,
            (shape.w_step - shape.len) * 16,
        ];
        // SAFETY: the checks above: `len` is a nonzero even number, the steps at least `len`,
        // `x` holds `(rows − 1) · x_step + len` words and `w` four words per run of
        // `(rows − 1) · w_step + len` runs; per row the loop reads `len` consecutive words
        // through the activation pointer and `4 · len` through the weight pointer (LDRDs
        // post-incremented by 8), then both skip the rest of their step: every load is inside
        // its slice and word-aligned. `block` is only read. Only the named registers and the
        // flags change. LDR, LDRD, SXTB16, SMLAD, ADD, SUBS and BNE exist on every
        // icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "1:",
                "ldr {cnt}, [{blk}]",
                "2:",
                "ldr {x}, [{pa}], #4",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "sxtb16 {t}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlad {a0}, {w0}, {t}, {a0}",
                "smlad {a0}, {w1}, {x}, {a0}",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "smlad {a1}, {w0}, {t}, {a1}",
                "smlad {a1}, {w1}, {x}, {a1}",
                "ldr {x}, [{pa}], #4",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "sxtb16 {t}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlad {a0}, {w0}, {t}, {a0}",
                "smlad {a0}, {w1}, {x}, {a0}",
                "ldrd {w0}, {w1}, [{pw}], #8",
                "smlad {a1}, {w0}, {t}, {a1}",
                "smlad {a1}, {w1}, {x}, {a1}",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                "subs {rows}, {rows}, #1",
                "beq 3f",
                "ldrd {w0}, {w1}, [{blk}, #4]",
                "add {pa}, {pa}, {w0}",
                "add {pw}, {pw}, {w1}",
                "b 1b",
                "3:",
                pa = inout(reg) x.as_ptr() => _,
                pw = inout(reg) w.as_ptr() => _,
                rows = inout(reg) shape.rows => _,
                blk = in(reg) block.as_ptr(),
                cnt = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                x = out(reg) _,
                t = out(reg) _,
                w0 = out(reg) _,
                w1 = out(reg) _,
                options(nostack, readonly),
            );
        }
        Some([a0, a1])
    }
    #[cfg(not(icefold_dsp))]
    {
        let mut acc = acc;
        for r in 0..shape.rows {
            let xs = x
                .get(r * shape.x_step..r * shape.x_step + shape.len)
                .unwrap_or_default();
            let ws = w.get(4 * r * shape.w_step..).unwrap_or_default();
            let [a0, a1, _, _] = sxtb16_2x2(ws, [xs, xs], [acc[0], acc[1], 0, 0]);
            acc = [a0, a1];
        }
        Some(acc)
    }
}

// =============================================================================================
// Depthwise 3x3 pass and output stage in assembly (issue #16, "Hand-written depthwise and output
// stage" in docs/BENCHMARKS.md). Used by src/kernels/fast/depthwise.rs.
// =============================================================================================

/// Words from one padded input row of [`dw3x3_row`] to the next: the rows are one buffer, so
/// the assembly reaches the three rows of a window at fixed offsets from one pointer.
pub const DW_ROW: usize = 66;

/// One channel pair's depthwise 3x3 constants, laid out once per channel pair as
/// [`dw3x3_row`]'s assembly pushes them (two LDM/PUSH pairs of seven words leave the two biases
/// twice, the nine kernel taps and the end of the sums at `sp + 0, 16, 52`).
#[derive(Clone, Copy, Debug)]
pub struct DwPair {
    /// `w3, w4, w5, w6, w7, w8, end, bias0, bias1, bias0, bias1, w0, w1, w2`: tap
    /// `3 · ky + kx` as `pair(w[ch][tap], w[ch + 1][tap])`; `end` is written by each call.
    words: [u32; 14],
}

impl DwPair {
    /// The taps (row-major) as lane-pair words `(channel, channel + 1)` and the two biases.
    pub fn new(w: [u32; 9], bias: [i32; 2]) -> DwPair {
        let [w0, w1, w2, w3, w4, w5, w6, w7, w8] = w;
        let [b0, b1] = bias.map(|b| b as u32);
        DwPair {
            words: [w3, w4, w5, w6, w7, w8, 0, b0, b1, b0, b1, w0, w1, w2],
        }
    }

    /// Tap `t` (row-major).
    #[cfg(not(icefold_dsp))]
    fn tap(&self, t: usize) -> u32 {
        let at = if t < 3 { t + 11 } else { t - 3 };
        self.words.get(at).copied().unwrap_or(0)
    }

    /// The two biases.
    #[cfg(not(icefold_dsp))]
    fn bias(&self) -> [i32; 2] {
        [self.words[7] as i32, self.words[8] as i32]
    }
}

/// One output row of a depthwise 3x3 convolution of one channel pair, as accumulators:
/// for output pixel pairs `q` in `0..pairs` (pixels `2q` and `2q + 1`, horizontal stride `S`),
/// `accs[4q..4q + 4] = [a0, a1, b0, b1]` where `a` and `b` are the two pixels' sums
/// `bias + Σ_ky Σ_kx w[3ky + kx] · x[ky][pixel · S + kx]` per lane (channel), and `x[ky]` is the
/// row of `DW_ROW` words at `ky · DW_ROW` in `rows`. Nothing is done unless `S` is 1 or 2,
/// `pairs >= 1`, `accs` holds `4 · pairs` values and `rows` every word read,
/// `2 · DW_ROW + (2 · pairs − 1) · S + 3`. Sums wrap modulo 2^32 (the quantization contract
/// bounds them); an odd pixel count's last pair computes a pixel the caller does not store.
///
/// On Armv7E-M / Armv8-M with DSP (`icefold_dsp`), per pixel pair: one LDM of the biases, per
/// kernel row two loads (LDRD, LDR) of the first three words, one or two more, two loads of the
/// row's three weights (LDRD, LDR) and twelve SMLABB/SMLATT; one STM of the four sums and four
/// instructions of loop: 57 instructions (stride 2: 60) for 36 multiplies on two channels
/// (LLVM's loop for the same Rust took about 110, spilling weights and loaded words).
#[inline(always)]
pub fn dw3x3_row<const S: usize>(rows: &[u32], k: &mut DwPair, accs: &mut [i32], pairs: usize) {
    let need = (2 * pairs)
        .wrapping_sub(1)
        .wrapping_mul(S)
        .wrapping_add(3 + 2 * DW_ROW);
    if !(S == 1 || S == 2) || pairs == 0 || pairs > accs.len() / 4 || need > rows.len() {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        k.words[6] = accs.as_mut_ptr().wrapping_add(4 * pairs) as usize as u32;
        let params = &k.words;
        // SAFETY: the check above: `rows` holds `2 · DW_ROW + (2 · pairs − 1) · S + 3` words,
        // and pair `q` reads words `ky · DW_ROW + 2qS + (0..S + 3)` (the pointer in r12 moves
        // `2S` words per pair: offsets 0..=264·2 + 4·(S + 2) bytes from it), so the last pair
        // reads up to word `2 · DW_ROW + (2 · pairs − 1) · S + 2`: inside. It writes
        // `4 · pairs` i32 at `accs` (stopping when lr reaches `end`, `accs + 4 · pairs`:
        // `pairs >= 1` and `accs` holds them), reads the fourteen words of `params`, and
        // pushes 56 bytes that it pops (`add sp`) before the end. Only the named registers and
        // the flags (with Q) change. LDM, PUSH, LDRD, SMLABB, SMLATT, STM exist on every
        // icefold_dsp core; r6 and r7 (LLVM's base and frame pointers) are not touched.
        if S == 1 {
            // SAFETY: see above.
            unsafe {
                core::arch::asm!(
                "ldm r0!, {{r1-r5, r8, r10}}",
                "push {{r1-r5, r8, r10}}",
                "ldm r0, {{r1-r5, r8, r10}}",
                "push {{r1-r5, r8, r10}}",
                "1:",
                "ldm sp, {{r0-r3}}",
                // kernel row 0
                "ldrd r4, r5, [r12, #0]",
                "ldr r8, [r12, #8]",
                "ldrd r9, r10, [sp, #16]",
                "ldr r11, [sp, #24]",
                "smlabb r0, r9, r4, r0",
                "smlatt r1, r9, r4, r1",
                "ldr r4, [r12, #12]",
                "smlabb r2, r9, r5, r2",
                "smlatt r3, r9, r5, r3",
                "smlabb r0, r10, r5, r0",
                "smlatt r1, r10, r5, r1",
                "smlabb r2, r10, r8, r2",
                "smlatt r3, r10, r8, r3",
                "smlabb r0, r11, r8, r0",
                "smlatt r1, r11, r8, r1",
                "smlabb r2, r11, r4, r2",
                "smlatt r3, r11, r4, r3",
                // kernel row 1
                "ldrd r4, r5, [r12, #264]",
                "ldr r8, [r12, #272]",
                "ldrd r9, r10, [sp, #28]",
                "ldr r11, [sp, #36]",
                "smlabb r0, r9, r4, r0",
                "smlatt r1, r9, r4, r1",
                "ldr r4, [r12, #276]",
                "smlabb r2, r9, r5, r2",
                "smlatt r3, r9, r5, r3",
                "smlabb r0, r10, r5, r0",
                "smlatt r1, r10, r5, r1",
                "smlabb r2, r10, r8, r2",
                "smlatt r3, r10, r8, r3",
                "smlabb r0, r11, r8, r0",
                "smlatt r1, r11, r8, r1",
                "smlabb r2, r11, r4, r2",
                "smlatt r3, r11, r4, r3",
                // kernel row 2
                "ldrd r4, r5, [r12, #528]",
                "ldr r8, [r12, #536]",
                "ldrd r9, r10, [sp, #40]",
                "ldr r11, [sp, #48]",
                "smlabb r0, r9, r4, r0",
                "smlatt r1, r9, r4, r1",
                "ldr r4, [r12, #540]",
                "smlabb r2, r9, r5, r2",
                "smlatt r3, r9, r5, r3",
                "smlabb r0, r10, r5, r0",
                "smlatt r1, r10, r5, r1",
                "smlabb r2, r10, r8, r2",
                "smlatt r3, r10, r8, r3",
                "smlabb r0, r11, r8, r0",
                "smlatt r1, r11, r8, r1",
                "smlabb r2, r11, r4, r2",
                "smlatt r3, r11, r4, r3",
                "stmia lr!, {{r0-r3}}",
                "add r12, r12, #8",
                "ldr r10, [sp, #52]",
                "cmp lr, r10",
                "blo 1b",
                "add sp, sp, #56",
                inout("r0") params.as_ptr() => _,
                out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                inout("r12") rows.as_ptr() => _,
                inout("lr") accs.as_mut_ptr() => _,
                options(),
                );
            }
        } else {
            // SAFETY: see above.
            unsafe {
                core::arch::asm!(
                "ldm r0!, {{r1-r5, r8, r10}}",
                "push {{r1-r5, r8, r10}}",
                "ldm r0, {{r1-r5, r8, r10}}",
                "push {{r1-r5, r8, r10}}",
                "1:",
                "ldm sp, {{r0-r3}}",
                // kernel row 0
                "ldrd r4, r5, [r12, #0]",
                "ldr r8, [r12, #8]",
                "ldrd r9, r10, [sp, #16]",
                "ldr r11, [sp, #24]",
                "smlabb r0, r9, r4, r0",
                "smlatt r1, r9, r4, r1",
                "smlabb r2, r9, r8, r2",
                "smlatt r3, r9, r8, r3",
                "ldr r4, [r12, #12]",
                "smlabb r0, r10, r5, r0",
                "smlatt r1, r10, r5, r1",
                "smlabb r2, r10, r4, r2",
                "smlatt r3, r10, r4, r3",
                "ldr r5, [r12, #16]",
                "smlabb r0, r11, r8, r0",
                "smlatt r1, r11, r8, r1",
                "smlabb r2, r11, r5, r2",
                "smlatt r3, r11, r5, r3",
                // kernel row 1
                "ldrd r4, r5, [r12, #264]",
                "ldr r8, [r12, #272]",
                "ldrd r9, r10, [sp, #28]",
                "ldr r11, [sp, #36]",
                "smlabb r0, r9, r4, r0",
                "smlatt r1, r9, r4, r1",
                "smlabb r2, r9, r8, r2",
                "smlatt r3, r9, r8, r3",
                "ldr r4, [r12, #276]",
                "smlabb r0, r10, r5, r0",
                "smlatt r1, r10, r5, r1",
                "smlabb r2, r10, r4, r2",
                "smlatt r3, r10, r4, r3",
                "ldr r5, [r12, #280]",
                "smlabb r0, r11, r8, r0",
                "smlatt r1, r11, r8, r1",
                "smlabb r2, r11, r5, r2",
                "smlatt r3, r11, r5, r3",
                // kernel row 2
                "ldrd r4, r5, [r12, #528]",
                "ldr r8, [r12, #536]",
                "ldrd r9, r10, [sp, #40]",
                "ldr r11, [sp, #48]",
                "smlabb r0, r9, r4, r0",
                "smlatt r1, r9, r4, r1",
                "smlabb r2, r9, r8, r2",
                "smlatt r3, r9, r8, r3",
                "ldr r4, [r12, #540]",
                "smlabb r0, r10, r5, r0",
                "smlatt r1, r10, r5, r1",
                "smlabb r2, r10, r4, r2",
                "smlatt r3, r10, r4, r3",
                "ldr r5, [r12, #544]",
                "smlabb r0, r11, r8, r0",
                "smlatt r1, r11, r8, r1",
                "smlabb r2, r11, r5, r2",
                "smlatt r3, r11, r5, r3",
                "stmia lr!, {{r0-r3}}",
                "add r12, r12, #16",
                "ldr r10, [sp, #52]",
                "cmp lr, r10",
                "blo 1b",
                "add sp, sp, #56",
                inout("r0") params.as_ptr() => _,
                out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                inout("r12") rows.as_ptr() => _,
                inout("lr") accs.as_mut_ptr() => _,
                options(),
                );
            }
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let x = |at: usize| rows.get(at).copied().unwrap_or(0);
        for (q, out) in accs.chunks_exact_mut(4).take(pairs).enumerate() {
            let (mut a, mut b) = (k.bias(), k.bias());
            for (tap, w) in (0..9).map(|t| (t, k.tap(t))) {
                let at = tap / 3 * DW_ROW + tap % 3 + 2 * q * S;
                a = smla_lanes(w, x(at), a);
                b = smla_lanes(w, x(at + S), b);
            }
            if let Some(out) = out.first_chunk_mut::<4>() {
                *out = [a[0], a[1], b[0], b[1]];
            }
        }
    }
}

/// The output stage of [`requant_run`] for one channel: `Scale` (src/kernels/fast/requant.rs)
/// with a right shift of at least 2, the output zero point folded into the high word, and the
/// clamp.
#[derive(Clone, Copy, Debug)]
pub struct RunScale {
    /// High word of the rounding constant plus `zero_point · 2^shift` (the low word is 2^30).
    pub high: i32,
    /// The factor's multiplier (positive).
    pub multiplier: i32,
    /// Right shift of the high word, 1 to 30.
    pub shift: u32,
    /// Lower clamp (i16).
    pub min: i32,
    /// Upper clamp (i16; wins if the two cross).
    pub max: i32,
}

impl RunScale {
    /// The output stage of one accumulator: [`requant_run`]'s arithmetic in plain Rust (LLVM
    /// forms the SMLAL), for outputs that do not come in runs of one channel (the residual
    /// addition's elements).
    #[inline(always)]
    pub fn apply(&self, x: i32) -> i32 {
        let low = (x as u32 & 0x8000_0000) | 0x4000_0000;
        let high = self.high.wrapping_add(x >> 31);
        let q = ((i64::from(high) << 32) | i64::from(low))
            .wrapping_add(i64::from(x) * i64::from(self.multiplier));
        let v = ((q >> 32) as i32) >> self.shift;
        v.max(self.min).min(self.max)
    }
}

/// The output stage of `n` accumulators of one channel, every second value of `accs`
/// (`accs[2i]`), into every second value of `out` (`out[2i]`): for `x = accs[2i]`, the 64-bit
/// `Q = ((high + [x < 0] · −1) · 2^32 + 2^30 + [x < 0] · 2^31) + x · multiplier`, then
/// `clamp((Q >> 32) >> shift, min, max)` (the low word is `(x & 2^31) | 2^30`, so the carry of
/// `2^30 − [x < 0] · 2^31` reaches the high word as the `+ (x >> 31)`). Nothing is done unless
/// `n >= 1` and both slices hold index `2 · (n − 1)`.
///
/// On Armv7E-M / Armv8-M with DSP (`icefold_dsp`) the constants stay in registers: ten
/// instructions per output (LDR, AND, ORR, ADD, SMLAL, ASR, one SSAT or USAT, STRH, SUBS, BNE)
/// when the clamp is the int16 range or `[0, 32767]`, fifteen for any other (two compares with
/// their IT and moves).
#[inline(always)]
pub fn requant_run(accs: &[i32], out: &mut [i16], n: usize, k: &RunScale) {
    let last = n.wrapping_sub(1).wrapping_mul(2);
    if n == 0 || last >= accs.len() || last >= out.len() || last / 2 != n - 1 {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        // SAFETY: the check above: the loop runs `n >= 1` times (SUBS/BNE on r5), reading
        // `accs[2i]` (r3, 8 bytes per step) and writing `out[2i]` (r4, 4 bytes per step) for
        // `i < n`, and both slices hold index `2 · (n − 1)`. Only the named registers and the
        // flags change (no stack); SMLAL, SSAT, USAT, IT exist on every icefold_dsp core.
        if (k.min, k.max) == (-32768, 32767) {
            // SAFETY: see above.
            unsafe {
                core::arch::asm!(
                "1:",
                "ldr r0, [r3], #8",
                "and r1, r0, #0x80000000",
                "orr r1, r1, #0x40000000",
                "add r2, r8, r0, asr #31",
                "smlal r1, r2, r0, r10",
                "asr r0, r2, r12",
                "ssat r0, #16, r0",
                "strh r0, [r4], #4",
                "subs r5, r5, #1",
                "bne 1b",
                out("r1") _, out("r2") _,
                inout("r3") accs.as_ptr() => _, inout("r4") out.as_mut_ptr() => _,
                inout("r5") n => _, in("r8") k.high, in("r10") k.multiplier, in("r12") k.shift,
                out("r0") _,
                options(),
                );
            }
        } else if (k.min, k.max) == (0, 32767) {
            // SAFETY: see above.
            unsafe {
                core::arch::asm!(
                "1:",
                "ldr r0, [r3], #8",
                "and r1, r0, #0x80000000",
                "orr r1, r1, #0x40000000",
                "add r2, r8, r0, asr #31",
                "smlal r1, r2, r0, r10",
                "asr r0, r2, r12",
                "usat r0, #15, r0",
                "strh r0, [r4], #4",
                "subs r5, r5, #1",
                "bne 1b",
                out("r1") _, out("r2") _,
                inout("r3") accs.as_ptr() => _, inout("r4") out.as_mut_ptr() => _,
                inout("r5") n => _, in("r8") k.high, in("r10") k.multiplier, in("r12") k.shift,
                out("r0") _,
                options(),
                );
            }
        } else {
            // SAFETY: see above.
            unsafe {
                core::arch::asm!(
                "1:",
                "ldr r0, [r3], #8",
                "and r1, r0, #0x80000000",
                "orr r1, r1, #0x40000000",
                "add r2, r8, r0, asr #31",
                "smlal r1, r2, r0, r10",
                "asr r0, r2, r12",
                "cmp r0, r9",
                "it lt",
                "movlt r0, r9",
                "cmp r0, r11",
                "it gt",
                "movgt r0, r11",
                "strh r0, [r4], #4",
                "subs r5, r5, #1",
                "bne 1b",
                in("r9") k.min, in("r11") k.max, out("r1") _, out("r2") _,
                inout("r3") accs.as_ptr() => _, inout("r4") out.as_mut_ptr() => _,
                inout("r5") n => _, in("r8") k.high, in("r10") k.multiplier, in("r12") k.shift,
                out("r0") _,
                options(),
                );
            }
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        for (x, y) in accs
            .iter()
            .step_by(2)
            .zip(out.iter_mut().step_by(2))
            .take(n)
        {
            *y = k.apply(*x) as i16;
        }
    }
}

// =============================================================================================
// Dense layers (issue #16, "Dense layers on DSP cores" in docs/BENCHMARKS.md). Used by
// src/kernels/fast/dense.rs.
// =============================================================================================

/// Widens int8 activations once per layer call into the lane pairs [`sxtb16_3x1`] reads: per
/// run of four values `x0..x3` (one word, little-endian) the words `(x0, x2)`, `(x1, x3)`, the
/// order [`sxtb16`] and [`sxtb16_ror8`] give a word of four int8 weights, so the weights need
/// no repacking. Writes `2 · min(x.len() / 4, out.len() / 2)` words.
#[inline(always)]
pub fn widen_pairs(x: &[i8], out: &mut [u32]) {
    for (quad, pair) in x.chunks_exact(4).zip(out.chunks_exact_mut(2)) {
        let (Some(quad), Some(pair)) = (quad.first_chunk::<4>(), pair.first_chunk_mut::<2>())
        else {
            continue;
        };
        let word = u32::from_le_bytes(quad.map(|v| v as u8));
        *pair = [sxtb16(word), sxtb16_ror8(word)];
    }
}

/// Three output features of a dense layer: `acc[k] + Σ_i w[k][i] · x[i]` over `n` runs of four
/// values, the fewest that `w[k]` (int8 weights, one word per run, little-endian) and `x`
/// ([`widen_pairs`]: two words per run) all hold. The three rows share every activation load,
/// and each weight word is widened in registers (SXTB16, SXTB16 ROR 8) right before its two
/// SMLADs.
///
/// With the DSP extension (`icefold_dsp`): per run (12 products) one LDRD of activations and
/// per row an LDR, two SXTB16 and two SMLADs, 16 instructions; four runs per loop pass (66 with
/// SUBS/BNE); the last `n % 4` runs in Rust. Twelve general registers live (three weight pointers,
/// the activation pointer, the count, three accumulators, two activation words, a weight word
/// and its even lanes), every one `asm!` may allocate on Thumb: a fourth row would need a
/// thirteenth.
#[inline(always)]
pub fn sxtb16_3x1(w: [&[u32]; 3], x: &[u32], acc: [i32; 3]) -> [i32; 3] {
    let n = w[0].len().min(w[1].len()).min(w[2].len()).min(x.len() / 2);
    #[allow(unused_mut)]
    let mut done = 0;
    let [mut a0, mut a1, mut a2] = acc;
    #[cfg(icefold_dsp)]
    {
        let quads = n / 4;
        if quads > 0 {
            // SAFETY: each `w[k]` holds at least `n` words and `x` at least `2n`; the loop
            // reads the first `4 · quads <= n` runs: per run one word through each weight
            // pointer and two through the activation pointer, every pointer post-incremented
            // past what it read, so every load is inside its slice; they are `u32` slices, so
            // the loads are word-aligned (LDRD needs only word alignment). Only the named
            // registers and the flags change (no stack, no stores): `nostack`, `readonly`.
            // LDR, LDRD, SXTB16, SMLAD, SUBS and BNE exist on every icefold_dsp core.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldrd {xe}, {xo}, [{px}], #8",
                    "ldr {w}, [{p0}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a0}, {t}, {xe}, {a0}",
                    "smlad {a0}, {w}, {xo}, {a0}",
                    "ldr {w}, [{p1}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a1}, {t}, {xe}, {a1}",
                    "smlad {a1}, {w}, {xo}, {a1}",
                    "ldr {w}, [{p2}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a2}, {t}, {xe}, {a2}",
                    "smlad {a2}, {w}, {xo}, {a2}",
                    "ldrd {xe}, {xo}, [{px}], #8",
                    "ldr {w}, [{p0}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a0}, {t}, {xe}, {a0}",
                    "smlad {a0}, {w}, {xo}, {a0}",
                    "ldr {w}, [{p1}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a1}, {t}, {xe}, {a1}",
                    "smlad {a1}, {w}, {xo}, {a1}",
                    "ldr {w}, [{p2}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a2}, {t}, {xe}, {a2}",
                    "smlad {a2}, {w}, {xo}, {a2}",
                    "ldrd {xe}, {xo}, [{px}], #8",
                    "ldr {w}, [{p0}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a0}, {t}, {xe}, {a0}",
                    "smlad {a0}, {w}, {xo}, {a0}",
                    "ldr {w}, [{p1}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a1}, {t}, {xe}, {a1}",
                    "smlad {a1}, {w}, {xo}, {a1}",
                    "ldr {w}, [{p2}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a2}, {t}, {xe}, {a2}",
                    "smlad {a2}, {w}, {xo}, {a2}",
                    "ldrd {xe}, {xo}, [{px}], #8",
                    "ldr {w}, [{p0}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a0}, {t}, {xe}, {a0}",
                    "smlad {a0}, {w}, {xo}, {a0}",
                    "ldr {w}, [{p1}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a1}, {t}, {xe}, {a1}",
                    "smlad {a1}, {w}, {xo}, {a1}",
                    "ldr {w}, [{p2}], #4",
                    "sxtb16 {t}, {w}",
                    "sxtb16 {w}, {w}, ror #8",
                    "smlad {a2}, {t}, {xe}, {a2}",
                    "smlad {a2}, {w}, {xo}, {a2}",
                    "subs {cnt}, {cnt}, #1",
                    "bne 2b",
                    p0 = inout(reg) w[0].as_ptr() => _,
                    p1 = inout(reg) w[1].as_ptr() => _,
                    p2 = inout(reg) w[2].as_ptr() => _,
                    px = inout(reg) x.as_ptr() => _,
                    cnt = inout(reg) quads => _,
                    a0 = inout(reg) a0,
                    a1 = inout(reg) a1,
                    a2 = inout(reg) a2,
                    xe = out(reg) _,
                    xo = out(reg) _,
                    w = out(reg) _,
                    t = out(reg) _,
                    options(nostack, readonly),
                );
            }
            done = 4 * quads;
        }
    }
    // The rest (everything in portable builds), run by run.
    for j in done..n {
        let (Some(w0), Some(w1), Some(w2), Some(&[xe, xo])) = (
            w[0].get(j),
            w[1].get(j),
            w[2].get(j),
            x.get(2 * j..).and_then(|x| x.first_chunk::<2>()),
        ) else {
            break;
        };
        let row = |w: u32, a: i32| smlad(sxtb16_ror8(w), xo, smlad(sxtb16(w), xe, a));
        a0 = row(*w0, a0);
        a1 = row(*w1, a1);
        a2 = row(*w2, a2);
    }
    [a0, a1, a2]
}

/// [`sxtb16_3x1`] over `blocks` consecutive blocks of three rows with the constants of a layer
/// call: row `r`'s `runs` weight words start at `w[r · stride]`, its sum starts at `bias[r]`
/// and is written to `sums[r]`, for `r < 3 · blocks`; `x` is the widened input (one position).
/// `false` (nothing written) unless `runs >= 1`, `stride >= runs` and every slice holds what
/// those rows read or write.
///
/// With the DSP extension the whole call is one loop nest in assembly: per block the rows'
/// pointers, biases, stores and count take 18 instructions instead of a Rust block's setup
/// (the block loop's state lives in a small table in memory, its address on the stack: the
/// runs' loop needs all twelve registers).
pub fn sxtb16_3x1_blocks(
    w: &[u32],
    stride: usize,
    runs: usize,
    x: &[u32],
    bias: &[i32],
    sums: &mut [i32],
    blocks: usize,
) -> bool {
    let rows = blocks.saturating_mul(3);
    let w_len = rows
        .checked_sub(1)
        .and_then(|r| r.checked_mul(stride))
        .and_then(|n| n.checked_add(runs));
    let fits = runs >= 1
        && stride >= runs
        && w_len.is_some_and(|n| n <= w.len())
        && x.len() >= 2 * runs
        && bias.len() >= rows
        && sums.len() >= rows;
    if !fits {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        // The block loop's state: x, runs / 4, runs % 4, the bytes from a block's third row's
        // end to the next block's first row, a row's bytes, the next sum, the next bias, the
        // blocks left.
        let mut table: [usize; 8] = [
            x.as_ptr() as usize,
            runs / 4,
            runs % 4,
            (stride - runs) * 4,
            stride * 4,
            sums.as_mut_ptr() as usize,
            bias.as_ptr() as usize,
            blocks,
        ];
        // SAFETY: the checks above. Block `b` reads the `runs` words of rows `3b`, `3b + 1`,
        // `3b + 2` (each `stride` words after the last: `r10`, `r11`, `r12` post-incremented
        // through exactly `runs` words, then moved on by `table[3]` and `table[4]` bytes to the
        // next block's rows), all inside `w` since `w.len() >= (3 · blocks − 1) · stride +
        // runs`; `2 · runs` words of `x` (`lr`, reset from `table[0]` per block); three
        // biases, and writes three sums (LDM/STM through `table[6]` and `table[5]`, advanced
        // by 12 bytes per block, `3 · blocks` of each in all). `table` is a local array the
        // assembly reads and updates. Every load and store is word-aligned (`u32`, `i32` and
        // `usize` slices). The stack: two words pushed at the start (keeping its 8-byte
        // alignment) and popped at the end; the table's address is reloaded from it after
        // each loop that reuses `r9`. LDR, LDRD, LDM, STR, STM, SXTB16, SMLAD, ADD, SUBS, CMP,
        // B, BEQ, BNE, PUSH and POP exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "push {{r8, r9}}",
                "ldr r8, [r9, #24]",
                "ldm r8!, {{r1, r2, r3}}",
                "str r8, [r9, #24]",
                "ldrd lr, r0, [r9]",
                "ldr r8, [r9, #16]",
                "add r11, r10, r8",
                "add r12, r11, r8",
                "2:",
                "cmp r0, #0",
                "beq 4f",
                "3:",
                "ldrd r4, r5, [lr], #8",
                "ldr r8, [r10], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r1, r9, r4, r1",
                "smlad r1, r8, r5, r1",
                "ldr r8, [r11], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r2, r9, r4, r2",
                "smlad r2, r8, r5, r2",
                "ldr r8, [r12], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r3, r9, r4, r3",
                "smlad r3, r8, r5, r3",
                "ldrd r4, r5, [lr], #8",
                "ldr r8, [r10], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r1, r9, r4, r1",
                "smlad r1, r8, r5, r1",
                "ldr r8, [r11], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r2, r9, r4, r2",
                "smlad r2, r8, r5, r2",
                "ldr r8, [r12], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r3, r9, r4, r3",
                "smlad r3, r8, r5, r3",
                "ldrd r4, r5, [lr], #8",
                "ldr r8, [r10], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r1, r9, r4, r1",
                "smlad r1, r8, r5, r1",
                "ldr r8, [r11], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r2, r9, r4, r2",
                "smlad r2, r8, r5, r2",
                "ldr r8, [r12], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r3, r9, r4, r3",
                "smlad r3, r8, r5, r3",
                "ldrd r4, r5, [lr], #8",
                "ldr r8, [r10], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r1, r9, r4, r1",
                "smlad r1, r8, r5, r1",
                "ldr r8, [r11], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r2, r9, r4, r2",
                "smlad r2, r8, r5, r2",
                "ldr r8, [r12], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r3, r9, r4, r3",
                "smlad r3, r8, r5, r3",
                "subs r0, r0, #1",
                "bne 3b",
                "4:",
                "ldr r9, [sp, #4]",
                "ldr r0, [r9, #8]",
                "cmp r0, #0",
                "beq 6f",
                "5:",
                "ldrd r4, r5, [lr], #8",
                "ldr r8, [r10], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r1, r9, r4, r1",
                "smlad r1, r8, r5, r1",
                "ldr r8, [r11], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r2, r9, r4, r2",
                "smlad r2, r8, r5, r2",
                "ldr r8, [r12], #4",
                "sxtb16 r9, r8",
                "sxtb16 r8, r8, ror #8",
                "smlad r3, r9, r4, r3",
                "smlad r3, r8, r5, r3",
                "subs r0, r0, #1",
                "bne 5b",
                "ldr r9, [sp, #4]",
                "6:",
                "ldr r8, [r9, #20]",
                "stm r8!, {{r1, r2, r3}}",
                "str r8, [r9, #20]",
                "ldr r8, [r9, #28]",
                "subs r8, r8, #1",
                "str r8, [r9, #28]",
                "beq 7f",
                "ldrd r8, r4, [r9, #12]",
                "add r10, r12, r8",
                "add r11, r10, r4",
                "add r12, r11, r4",
                "ldr r8, [r9, #24]",
                "ldm r8!, {{r1, r2, r3}}",
                "str r8, [r9, #24]",
                "ldrd lr, r0, [r9]",
                "b 2b",
                "7:",
                "pop {{r8, r9}}",
                inout("r9") table.as_mut_ptr() => _,
                inout("r10") w.as_ptr() => _,
                out("r0") _, out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r11") _, out("r12") _, out("lr") _,
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        for (b, sums) in sums.chunks_exact_mut(3).take(blocks).enumerate() {
            let row = |k: usize| {
                let at = (3 * b + k) * stride;
                w.get(at..at + runs).unwrap_or_default()
            };
            let bias = bias.get(3 * b..).and_then(|b| b.first_chunk::<3>());
            let acc = sxtb16_3x1([row(0), row(1), row(2)], x, *bias.unwrap_or(&[0; 3]));
            sums.copy_from_slice(&acc);
        }
    }
    true
}

/// SXTAB16: `acc` plus bytes 0 and 2 of `x` sign-extended, lane by lane (each lane wraps
/// modulo 2^16; [`pool_pairs`] keeps every lane in range).
#[inline(always)]
pub fn sxtab16(acc: u32, x: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "sxtab16 {r}, {acc}, {x}",
                r = lateout(reg) r, acc = in(reg) acc, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        let s = sxtb16(x);
        let low = (acc as u16).wrapping_add(s as u16);
        let high = ((acc >> 16) as u16).wrapping_add((s >> 16) as u16);
        u32::from(low) | (u32::from(high) << 16)
    }
}

/// Adds one position of int8 activations to the lane pairs of [`widen_pairs`] (SXTAB16 and
/// SXTAB16 ROR 8): after every position of a dense layer's input is added, `acc` holds the
/// input summed over its positions in the layout [`sxtb16_3x1`] reads. Exact while every sum
/// fits int16: at most 256 positions (`|sum| <= 128 · 256`).
#[inline(always)]
pub fn pool_pairs(x: &[i8], acc: &mut [u32]) {
    for (quad, pair) in x.chunks_exact(4).zip(acc.chunks_exact_mut(2)) {
        let (Some(quad), Some(pair)) = (quad.first_chunk::<4>(), pair.first_chunk_mut::<2>())
        else {
            continue;
        };
        let word = u32::from_le_bytes(quad.map(|v| v as u8));
        *pair = [
            sxtab16(pair[0], word),
            sxtab16(pair[1], word.rotate_right(8)),
        ];
    }
}

// =============================================================================================
// Depthwise 3x3 pixel by pixel, the channel pairs innermost (2026-12-06 round 3, "Depthwise on
// narrow maps and in bands" in docs/BENCHMARKS.md). Used by `by_pixel` in
// src/kernels/fast/depthwise.rs.
// =============================================================================================

/// Most channel pairs one [`DwPixelParams`] holds.
pub const DW_PIXEL_PAIRS: usize = 32;

/// Words per channel pair in [`DwPixelParams`]: four words the general form does not use,
/// then `bias0, bias1, w0..w8, high0, multiplier0, shift0, high1, multiplier1, shift1, min,
/// max, more` (`more`, word 23, is 0 for the last pair). The relu16 passes' forms
/// (simd/depthwise.rs) keep `more` at word 23; the transposed-ring form needs 23 words before
/// it, the others start at word [`DW_PIXEL_SKIP`], so that every pass steps from one pair's
/// `more` to the next pair's first word in the same post-indexed load.
const DW_PIXEL_WORDS: usize = 24;

/// Words of each pair the general and doubled forms leave unused before their constants.
const DW_PIXEL_SKIP: usize = 4;

/// The constants of up to [`DW_PIXEL_PAIRS`] channel pairs of a depthwise 3x3 convolution, in
/// the order [`dw3x3_pixel`]'s assembly reads them: per pair the two biases, the nine taps
/// (row-major, lane pairs `(channel, channel + 1)`), each channel's [`RunScale`] and the
/// clamp. The `more` words (nonzero but for the last pair) end the assembly's loop: they are
/// private, set by [`DwPixelParams::new`] alone, so the loop runs exactly `pairs` times.
pub struct DwPixelParams {
    words: [u32; DW_PIXEL_WORDS * DW_PIXEL_PAIRS],
    pairs: usize,
}

impl DwPixelParams {
    /// No channel pair, all zero: a buffer for [`DwPixelParams::reset`] (a constant, so that a
    /// caller's buffer is zeroed where it lies rather than built on the stack and copied).
    pub const EMPTY: DwPixelParams = DwPixelParams {
        words: [0; DW_PIXEL_WORDS * DW_PIXEL_PAIRS],
        pairs: 0,
    };

    /// Room for `pairs` channel pairs (at most [`DW_PIXEL_PAIRS`]; more are cut), all zero.
    pub fn new(pairs: usize) -> DwPixelParams {
        let mut params = DwPixelParams::EMPTY;
        params.reset(pairs);
        params
    }

    /// [`DwPixelParams::new`] in place.
    pub fn reset(&mut self, pairs: usize) {
        let pairs = pairs.min(DW_PIXEL_PAIRS);
        self.words = [0; DW_PIXEL_WORDS * DW_PIXEL_PAIRS];
        for (j, p) in self
            .words
            .chunks_exact_mut(DW_PIXEL_WORDS)
            .enumerate()
            .take(pairs)
        {
            if let Some(more) = p.last_mut() {
                *more = u32::from(j + 1 < pairs);
            }
        }
        self.pairs = pairs;
    }

    /// Channel pairs held.
    pub fn pairs(&self) -> usize {
        self.pairs
    }
}

/// `y` as int16 lane-pair words, if its elements are `i16` and it starts on a word boundary:
/// where [`dw3x3_pixel`] can store its results directly (an int16 output).
#[inline(always)]
pub fn i16_words<Y: 'static>(y: &mut [Y]) -> Option<&mut [u32]> {
    if core::any::TypeId::of::<Y>() != core::any::TypeId::of::<i16>() {
        return None;
    }
    // SAFETY: `Y` is `i16` (same `TypeId`), so this is the same slice at its own type: same
    // pointer, length, lifetime and exclusive borrow.
    let y: &mut [i16] = unsafe { core::slice::from_raw_parts_mut(y.as_mut_ptr().cast(), y.len()) };
    bytemuck::try_cast_slice_mut(y).ok()
}

/// One output pixel of a depthwise 3x3 convolution over `k.pairs()` channel pairs: for pair
/// `j`, the two lanes' sums `bias + Σ_ky Σ_kx w[3ky + kx] · rows[ky][kx · step + j]` (SMLABB,
/// SMLATT), each through its [`RunScale`] and the clamp, into `out[j]` as a lane pair (low:
/// the even channel). Nothing is done unless `step >= 1`, every row holds `2 · step + pairs`
/// words and `out` holds `pairs`.
///
/// With the DSP extension (`icefold_dsp`), per channel pair: LDRD of the biases, per tap one
/// load of the input word and SMLABB/SMLATT (the weights two at a time by LDRD), the output
/// stage of both lanes (16), the clamp (12), PKHBT, STR and three instructions of loop: about
/// 67 instructions for 18 multiplies and 2 outputs, where the row kernel on a 5-pixel row
/// spends about 130 (its row copies, per-row calls and store loop).
#[inline(always)]
pub fn dw3x3_pixel(rows: [&[u32]; 3], step: usize, k: &DwPixelParams, out: &mut [u32]) {
    let n = k.pairs;
    let need = step.wrapping_mul(2).wrapping_add(n);
    if n == 0 || step == 0 || step > 1 << 20 || out.len() < n || rows.iter().any(|r| r.len() < need)
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let [r0, r1, r2] = rows;
        // SAFETY: the check above. Pair `j` (the loop runs exactly `n = k.pairs` times: the
        // `more` words of `DwPixelParams`, private to this module, are nonzero for `j < n − 1`
        // and zero for `j = n − 1`) reads words `j`, `j + step` and `j + 2 · step` of each row
        // (r0..r2 advance one word per pair after the first load; r3, r4 are the other two
        // taps' byte offsets less that word), all below `2 · step + n <= len`; it reads words
        // 4 to 23 of pair `j` of `k.words` (r5 starts at word 4 and advances 96 bytes per pair,
        // `n <= DW_PIXEL_PAIRS`)
        // and writes word `j` of `out` (`n <= out.len()`). No stack; only the named registers
        // and the flags (with Q) change. LDRD, SMLABB, SMLATT, SMLAL, PKHBT, IT exist on every
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
            // clamp
            "ldrd r10, r11, [r5], #8",
            "cmp r8, r10",
            "it lt",
            "movlt r8, r10",
            "cmp r8, r11",
            "it gt",
            "movgt r8, r11",
            "cmp r9, r10",
            "it lt",
            "movlt r9, r10",
            "cmp r9, r11",
            "it gt",
            "movgt r9, r11",
            "pkhbt r8, r8, r9, lsl #16",
            "str r8, [r12], #4",
            // `more` (word 23), and on to the next pair's word 4
            "ldr r10, [r5], #20",
            "cmp r10, #0",
            "bne 1b",
            inout("r0") r0.as_ptr() => _, inout("r1") r1.as_ptr() => _,
            inout("r2") r2.as_ptr() => _,
            in("r3") (4 * step - 4) as u32, in("r4") (8 * step - 4) as u32,
            inout("r5") k.words.as_ptr().wrapping_add(DW_PIXEL_SKIP) => _,
            inout("r12") out.as_mut_ptr() => _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("lr") _,
            options(nostack),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let words = k.words.chunks_exact(DW_PIXEL_WORDS).take(n);
        for (j, (p, y)) in words.zip(out.iter_mut()).enumerate() {
            let Some(p) = p
                .get(DW_PIXEL_SKIP..)
                .and_then(|p| p.first_chunk::<{ DW_PIXEL_WORDS - DW_PIXEL_SKIP }>())
            else {
                return;
            };
            let mut acc = [p[0] as i32, p[1] as i32];
            for t in 0..9 {
                let (ky, kx) = (t / 3, t % 3);
                let x = rows[ky].get(kx * step + j).copied().unwrap_or(0);
                acc = smla_lanes(p[2 + t], x, acc);
            }
            let lane = |a: i32, at: usize| {
                RunScale {
                    high: p[at] as i32,
                    multiplier: p[at + 1] as i32,
                    shift: p[at + 2],
                    min: p[17] as i32,
                    max: p[18] as i32,
                }
                .apply(a)
            };
            *y = pair(lane(acc[0], 11), lane(acc[1], 14));
        }
    }
}

// =============================================================================================
// The groups = 1 convolutions' four-channel tile (src/kernels/fast/simd/conv.rs).
// =============================================================================================

/// One pass of the four-channel tile's multiply loop on int16 lane pairs in assembly text
/// (`smlad_4x1_pixels`, `smlad_4x1_run` and the fused `smlad_4x1_store`): four activation
/// words (LDR through r12, post-incremented), each meeting the four channels' interleaved
/// weight words (LDM through r5, written back) in four SMLADs into r8-r11. Uses r0-r4.
#[cfg(icefold_dsp)]
macro_rules! smlad_4x1_passes {
    () => {
        concat!(
            "ldr r4, [r12], #4\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
            "ldr r4, [r12], #4\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
            "ldr r4, [r12], #4\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
            "ldr r4, [r12], #4\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11"
        )
    };
}

/// A quarter of a pass of the fused pointwise tile's multiply loop (`quad_store::fused_pixels`)
/// and half a pass of the dense blocks' (`dense::smlad_4x1_quads`) in assembly text: two
/// activation words (one LDRD through r12, post-incremented, into r4 and r6), each meeting the
/// four channels' interleaved weight words (LDM of four through r5, written back) in four
/// SMLADs into r8-r11. Eleven instructions per 16 products where two LDRs took twelve. Uses
/// r0-r4 and r6.
#[cfg(icefold_dsp)]
macro_rules! smlad_4x1_pair {
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
        )
    };
}

mod conv;
pub use conv::{
    smlad_4x1_pixels, smlad_4x1_run, sxtb16_4x1_run, widen_interleaved, widen_interleaved_quads,
    QUAD_SPLIT,
};

// =============================================================================================
// The first layers' tile and row copy, and the depthwise pixel loop with a ReLU clamp
// (src/kernels/fast/simd/columns.rs, the fused tile's fields in src/kernels/fast/simd/first.rs,
// src/kernels/fast/simd/depthwise.rs).
// =============================================================================================

mod columns;
pub use columns::{copy_fields, copy_rows, smlad_2x2_pairs};
mod first;
pub use first::{copy_windows, fused_fields, fused_takes, FieldStage};
mod depthwise;
pub use depthwise::{
    copy_strided, copy_transposed, copy_transposed_columns, copy_words, dw3x3_pairs_transposed,
    dw3x3_pixel2_relu16, dw3x3_pixel_relu16, dw3x3_pixel_transposed, requant_pairs_relu16,
};
mod elementwise;
pub use elementwise::{add_tabulated, max_i8x4, max_taps, min_i8x4};
mod quad_store;
pub use quad_store::{
    smlad_4x1_groups, smlad_4x1_staged, smlad_4x1_store, stage_quads, QuadClamp, QuadStage,
};
mod pointwise;
pub use pointwise::{small_pixels, small_record, SMALL_RECORD, SMALL_WORDS};
mod dense;
pub use dense::{
    pair_dot, pair_sums, smlad_4x1_quad_blocks, smlad_4x1_quads, stage_rows_i16, stage_rows_i8,
    RowsConstants,
};

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn lanes_by_hand() {
        let x = u32::from_le_bytes([0x80, 0x7F, 0xFF, 0x01]);
        assert_eq!(sxtb16(x), pair(-128, -1));
        assert_eq!(sxtb16_ror8(x), pair(127, 1));
        let a = pair(-32768, 32767);
        let b = pair(-32768, -32768);
        assert_eq!(smlad(a, b, 5), 5 + (1 << 30) - 32767 * 32768);
        assert_eq!(smla_lanes(a, b, [1, 2]), [1 + (1 << 30), 2 - 32767 * 32768]);
        assert_eq!(pack_lo(pair(1, 2), pair(3, 4)), pair(1, 3));
        assert_eq!(pack_hi(pair(1, 2), pair(3, 4)), pair(2, 4));
        // Wraps like the instruction (the Q flag is not modelled).
        let sum = i64::from(i32::MAX) + (1 << 30) + 32767 * 32767;
        assert_eq!(smlad(a, a, i32::MAX), sum as i32);
    }

    /// A small deterministic generator (xorshift) for the tile tests.
    fn words(seed: &mut u64, n: usize) -> std::vec::Vec<u32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u32
            })
            .collect()
    }

    fn lanes(w: &[u32]) -> impl Iterator<Item = i32> + '_ {
        w.iter().flat_map(|w| [lo16(*w), hi16(*w)])
    }

    fn lo16(x: u32) -> i32 {
        i32::from(x as u16 as i16)
    }

    fn hi16(x: u32) -> i32 {
        i32::from((x >> 16) as u16 as i16)
    }

    fn sum(acc: i32, w: impl Iterator<Item = i32>, x: impl Iterator<Item = i32>) -> i32 {
        w.zip(x).fold(acc, |s, (w, x)| s.wrapping_add(w * x))
    }

    /// Every length from 0 to 13 words (whole loop passes, the Rust rest, both), unequal
    /// slice lengths (the shortest decides), and lanes at the i16 extremes.
    #[test]
    fn smlad_2x2_equals_the_sums() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for n in 0..14 {
            for extra in [0, 1, 3] {
                let [w0, w1, xa, xb] =
                    [n + extra, n, n, n + 2 * extra].map(|n| words(&mut seed, n));
                let acc = [7, -9, 1 << 20, -(1 << 20)];
                let got = smlad_2x2([&w0, &w1], [&xa, &xb], acc);
                let w = [&w0[..n], &w1[..n]];
                let x = [&xa[..n], &xb[..n]];
                let want = [
                    sum(acc[0], lanes(w[0]), lanes(x[0])),
                    sum(acc[1], lanes(w[1]), lanes(x[0])),
                    sum(acc[2], lanes(w[0]), lanes(x[1])),
                    sum(acc[3], lanes(w[1]), lanes(x[1])),
                ];
                assert_eq!(got, want, "n = {n}, extra = {extra}");
            }
        }
        // Products of ±2^30 alternating (no partial sum wraps): each pair of words adds 1.
        let (e, f) = (pair(-32768, 32767), pair(32767, -32768));
        let w = [[e, f, e, f], [f, e, f, e]];
        let x = [[e; 4], [f; 4]];
        assert_eq!(smlad_2x2([&w[0], &w[1]], [&x[0], &x[1]], [0; 4]), [2; 4]);
    }

    /// The window loops equal the single-row tiles row by row, and refuse shapes they do not
    /// take (a length that is not a whole number of loop passes, overlapping rows, slices too
    /// short) instead of reading past a slice.
    #[test]
    fn windows_equal_the_rows_and_refuse_other_shapes() {
        let mut seed = 0x2545_F491_4F6C_DD1D;
        let x = [words(&mut seed, 64), words(&mut seed, 64)];
        let w = [words(&mut seed, 48), words(&mut seed, 48)];
        let acc = [1, 2, 3, -4];
        let window = Window {
            rows: 3,
            len: 8,
            x_step: 20,
        };
        let mut want = acc;
        for r in 0..3 {
            let ws = [&w[0][8 * r..8 * r + 8], &w[1][8 * r..8 * r + 8]];
            want = smlad_2x2(
                ws,
                [&x[0][20 * r..], &x[1][20 * r..]].map(|x| &x[..8]),
                want,
            );
        }
        assert_eq!(
            smlad_2x2_rows([&w[0], &w[1]], [&x[0], &x[1]], window, acc),
            Some(want)
        );
        let w8 = [&w[0][..], &w[1][..]].concat();
        let mut want8 = acc;
        for r in 0..3 {
            let xs = [&x[0][20 * r..20 * r + 8], &x[1][20 * r..20 * r + 8]];
            want8 = sxtb16_2x2(&w8[32 * r..32 * r + 32], xs, want8);
        }
        assert_eq!(
            sxtb16_2x2_rows(&w8, [&x[0], &x[1]], window, acc),
            Some(want8)
        );
        let refused = [
            Window {
                rows: 3,
                len: 6,
                x_step: 20,
            },
            Window {
                rows: 3,
                len: 8,
                x_step: 7,
            },
            Window {
                rows: 4,
                len: 8,
                x_step: 20,
            },
            Window {
                rows: 0,
                len: 8,
                x_step: 20,
            },
        ];
        for window in refused {
            assert_eq!(
                smlad_2x2_rows([&w[0], &w[1]], [&x[0], &x[1]], window, acc),
                None,
                "{window:?}"
            );
        }
        let odd = Window {
            rows: 1,
            len: 3,
            x_step: 3,
        };
        assert_eq!(sxtb16_2x2_rows(&w8, [&x[0], &x[1]], odd, acc), None);
        // Rows reach word 66 of 64.
        let too_long = Window {
            rows: 3,
            len: 8,
            x_step: 29,
        };
        assert_eq!(sxtb16_2x2_rows(&w8, [&x[0], &x[1]], too_long, acc), None);
    }

    /// The int8 tile against plain sums of the int8 weights and activations: 0 to 9 runs
    /// (whole loop passes and an odd run), weights through `widen_quads`.
    #[test]
    fn sxtb16_2x2_equals_the_sums() {
        use std::vec::Vec;
        let mut seed = 0xD1B5_4A32_D192_ED03;
        for n in 0..10 {
            let bytes = |seed: &mut u64| -> Vec<i8> {
                words(seed, n)
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .map(|b| b as i8)
                    .collect()
            };
            let (w0, w1) = (bytes(&mut seed), bytes(&mut seed));
            let (xa, xb) = (words(&mut seed, n), words(&mut seed, n));
            let mut w = Vec::new();
            for (q0, q1) in w0.chunks_exact(4).zip(w1.chunks_exact(4)) {
                let (Some(q0), Some(q1)) = (q0.first_chunk::<4>(), q1.first_chunk::<4>()) else {
                    continue;
                };
                w.extend(widen_quads(q0, q1));
            }
            let int8 = |x: &[u32]| -> Vec<i32> {
                x.iter()
                    .flat_map(|x| x.to_le_bytes())
                    .map(|b| i32::from(b as i8))
                    .collect()
            };
            let acc = [3, -4, 5, -6];
            let got = sxtb16_2x2(&w, [&xa, &xb], acc);
            let weights = |w: &[i8]| w.iter().map(|w| i32::from(*w)).collect::<Vec<_>>();
            let (w0, w1, xa, xb) = (weights(&w0), weights(&w1), int8(&xa), int8(&xb));
            let want = [
                sum(acc[0], w0.iter().copied(), xa.iter().copied()),
                sum(acc[1], w1.iter().copied(), xa.iter().copied()),
                sum(acc[2], w0.iter().copied(), xb.iter().copied()),
                sum(acc[3], w1.iter().copied(), xb.iter().copied()),
            ];
            assert_eq!(got, want, "n = {n}");
        }
    }
}

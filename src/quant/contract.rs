//! The quantization contract: the bounds and constants that the host tool must respect when it
//! writes an int8 model, that the loader checks, and that make the int8 kernels exact.
//!
//! The kernels rely on these facts (no i32 accumulator or pooling sum can wrap; softmax outputs
//! have a fixed quantization); they live here, not inside a kernel, because three parties share
//! them: the host tool (which chooses scales so that they hold), the loader (which refuses blobs
//! where they do not) and the kernels (reference and fast alike).

use crate::format::DType;

/// Largest magnitude of one int8 × int8 product: `|−128 · −128|`.
pub const MAX_PRODUCT: i64 = 1 << 14;

/// Largest magnitude of one int8 weight × int16 activation product: `|−128 · −32768|`.
pub const MAX_PRODUCT_I16: i64 = 1 << 22;

/// Products per output for which every `|bias'| < 2^30` fits ([`accumulator_fits`]).
pub const MAX_PRODUCTS_PER_OUTPUT: usize = 1 << 16;

/// True when `bias + Σ_{k < products} w_k x_k` cannot leave the i32 range for any int8 `w`, `x`
/// (`|bias| + products · 2^14 <= i32::MAX`). The loader checks this per output channel.
pub fn accumulator_fits(products: usize, bias: i32) -> bool {
    fits(products, MAX_PRODUCT, bias)
}

/// [`accumulator_fits`] for an int16 input (`|bias| + products · 2^22 <= i32::MAX`).
pub fn accumulator_fits_i16(products: usize, bias: i32) -> bool {
    fits(products, MAX_PRODUCT_I16, bias)
}

/// [`accumulator_fits`] or [`accumulator_fits_i16`], by the element type of the layer's input.
pub fn accumulator_fits_for(input: DType, products: usize, bias: i32) -> bool {
    if input == DType::I16 {
        accumulator_fits_i16(products, bias)
    } else {
        accumulator_fits(products, bias)
    }
}

fn fits(products: usize, max_product: i64, bias: i32) -> bool {
    u64::try_from(products)
        .ok()
        .and_then(|k| k.checked_mul(max_product.unsigned_abs()))
        .and_then(|k| k.checked_add(u64::from(bias.unsigned_abs())))
        .is_some_and(|bound| bound <= i32::MAX as u64)
}

/// Largest window (`kernel_h · kernel_w`) the loader accepts for an int8 pooling layer: a sum of
/// that many `q − zp_in` (each at most 255 in magnitude) stays below 2^31, so no sum wraps.
pub const MAX_POOL_WINDOW_AREA: usize = 1 << 23;

/// Zero point of a softmax output (scale `1 / 256`, TensorFlow Lite's convention): int8 `-128`
/// is probability 0, `127` is `255 / 256`.
pub const SOFTMAX_OUTPUT_ZERO_POINT: i8 = -128;

/// Scale of an int16 softmax output as a power of two: probability `p` is `p · 2^15` steps
/// (scale `1 / 32768`, zero point 0), saturated at 32767.
pub const WIDE_SOFTMAX_OUTPUT_SHIFT: u32 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulator_bound() {
        assert!(accumulator_fits(MAX_PRODUCTS_PER_OUTPUT, (1 << 30) - 1));
        assert!(
            !accumulator_fits(0, i32::MIN),
            "conservative: |i32::MIN| > i32::MAX"
        );
        assert!(accumulator_fits(0, i32::MAX));
        // 2^17 products of 2^14 reach 2^31: one too many.
        assert!(!accumulator_fits(1 << 17, 0));
        assert!(accumulator_fits((1 << 17) - 1, (1 << 14) - 1));
        assert!(!accumulator_fits((1 << 17) - 1, 1 << 14));
        assert!(!accumulator_fits(usize::MAX, 0));
        // int16 inputs: 2^22 per product, so 2^9 products reach 2^31.
        assert!(accumulator_fits_i16(256, (1 << 30) - 1));
        assert!(accumulator_fits_i16((1 << 9) - 1, (1 << 22) - 1));
        assert!(!accumulator_fits_i16((1 << 9) - 1, 1 << 22));
        assert!(!accumulator_fits_i16(1 << 9, 0));
    }
}

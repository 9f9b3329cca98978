//! Per-layer trace: what each layer produced, cheap enough to log from firmware.
//!
//! [`checksum`] condenses a layer's output bytes to 32 bits (FNV-1a), so a device can report every
//! layer of an inference in a few bytes per layer and the host can compare it, layer by layer,
//! with its own run of the same blob and input: the first layer whose checksum differs is where
//! host and device diverge. For int8 models the checksums must be identical everywhere.
//!
//! With the `defmt` feature, [`DefmtTrace`] is an [`Observer`](crate::Observer) that logs one
//! line per layer with `defmt::println!` (unconditional, not filtered by `DEFMT_LOG`: passing the
//! observer is the opt-in). It costs a pass over each layer's output, so profile without it.

/// FNV-1a (32 bit) of `bytes`: a layer output's fingerprint in traces.
pub fn checksum(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
}

/// Logs every layer's index, operation, output shape, byte count and [`checksum`] over defmt:
/// `TRACE <layer> <op> <d0>x<d1>x<d2> <bytes> <checksum as 8 hex digits>`.
#[cfg(feature = "defmt")]
#[derive(Clone, Copy, Debug, Default)]
pub struct DefmtTrace;

#[cfg(feature = "defmt")]
impl crate::Observer for DefmtTrace {
    fn layer_end(&mut self, index: u16, layer: &crate::format::Layer, output: &[u8]) {
        let [d0, d1, d2] = layer.output.dims;
        defmt::println!(
            "TRACE {=u16} {=str} {=u16}x{=u16}x{=u16} {=usize} {=u32:08x}",
            index,
            layer.op.name(),
            d0,
            d1,
            d2,
            output.len(),
            checksum(output)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_is_fnv1a() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(checksum(b""), 0x811c_9dc5);
        assert_eq!(checksum(b"a"), 0xe40c_292c);
        assert_eq!(checksum(b"foobar"), 0xbf9c_f968);
    }
}

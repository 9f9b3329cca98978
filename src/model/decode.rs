//! Decoding layer records with only the operations a firmware links.
//!
//! serde's derived decoder for [`Op`] holds a decoder for every operation, and since a record's
//! operation is known only when it is read, all of them are reachable and linked (8 KB of the
//! minimal firmware's code on a Cortex-M4F, docs/BENCHMARKS.md). This decoder reads the same
//! bytes (postcard: the variant index as a varint, then the variant's fields in order, exactly as
//! the derive writes them) but keeps the arm of an operation only when the firmware's [`Kernels`]
//! set links one of its kernels: with a constant set the compiler drops the other arms and their
//! field decoders. A record of an operation outside the set is refused by name
//! ([`NotLinked`]), as the loader refuses a layer whose kernel is outside the set.
//!
//! The equivalence with the derived decoder is tested on every operation (`tests` below) and by
//! every blob the test suite loads.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, DeserializeSeed, EnumAccess, SeqAccess, VariantAccess, Visitor};

use crate::engine::{Kernel, Kernels};
use crate::format::{Layer, Op, Span, TensorDesc, MAX_LAYER_INPUTS};

/// Why a record did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Undecoded {
    /// The bytes are not a record.
    Malformed,
    /// The record is a valid operation the firmware does not link.
    NotLinked(NotLinked),
}

/// An operation outside the firmware's kernel set: its one kernel when the operation has only
/// one, else the operation's name (its kernel depends on the operands, which come after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotLinked {
    /// The operation runs on this kernel alone.
    Kernel(Kernel),
    /// The operation, whose kernels all are outside the set.
    Operation(&'static str),
}

/// Decodes one record from the front of `bytes`, returning it and the bytes after it.
pub(crate) fn take_layer<K: Kernels>(bytes: &[u8]) -> Result<(Layer, &[u8]), Undecoded> {
    let mut not_linked = None;
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let seed = LayerSeed::<K> {
        not_linked: &mut not_linked,
        kernels: PhantomData,
    };
    match seed.deserialize(&mut de) {
        Ok(layer) => Ok((layer, de.finalize().map_err(|_| Undecoded::Malformed)?)),
        Err(_) => Err(not_linked.map_or(Undecoded::Malformed, Undecoded::NotLinked)),
    }
}

/// A record, fields in the order of [`Layer`]'s declaration (postcard: a struct is its fields).
struct LayerSeed<'b, K> {
    not_linked: &'b mut Option<NotLinked>,
    kernels: PhantomData<K>,
}

/// The number of fields of [`Layer`].
const LAYER_FIELDS: usize = 4;

impl<'de, K: Kernels> DeserializeSeed<'de> for LayerSeed<'_, K> {
    type Value = Layer;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Layer, D::Error> {
        deserializer.deserialize_tuple(LAYER_FIELDS, self)
    }
}

impl<'de, K: Kernels> Visitor<'de> for LayerSeed<'_, K> {
    type Value = Layer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a layer record")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Layer, A::Error> {
        let missing = || de::Error::invalid_length(LAYER_FIELDS, &"a layer record");
        let op = seq
            .next_element_seed(OpSeed::<K> {
                not_linked: self.not_linked,
                kernels: PhantomData,
            })?
            .ok_or_else(missing)?;
        let inputs = seq
            .next_element::<[TensorDesc; MAX_LAYER_INPUTS]>()?
            .ok_or_else(missing)?;
        let input_count = seq.next_element::<u8>()?.ok_or_else(missing)?;
        let output = seq.next_element::<TensorDesc>()?.ok_or_else(missing)?;
        Ok(Layer {
            op,
            inputs,
            input_count,
            output,
        })
    }
}

/// An [`Op`]: the variant index, then the variant's fields.
struct OpSeed<'b, K> {
    not_linked: &'b mut Option<NotLinked>,
    kernels: PhantomData<K>,
}

impl<'de, K: Kernels> DeserializeSeed<'de> for OpSeed<'_, K> {
    type Value = Op;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Op, D::Error> {
        // The name and variant list only matter to self-describing formats; postcard reads the
        // index.
        deserializer.deserialize_enum("Op", &[], self)
    }
}

/// Whether the set links any of `kernels`. Evaluated in a `const` block: at `opt-level = "s"`
/// the compiler kept this loop at run time for the operations of several kernels, and with it
/// the decoders of operations the firmware does not link.
const fn links_any<K: Kernels>(kernels: &[Kernel]) -> bool {
    let mut i = 0;
    while i < kernels.len() {
        if K::SET.contains(kernels[i]) {
            return true;
        }
        i += 1;
    }
    false
}

impl<'de, K: Kernels> Visitor<'de> for OpSeed<'_, K> {
    type Value = Op;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an operation")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Op, A::Error> {
        let (index, variant) = data.variant::<u32>()?;
        // One arm per variant of `Op`, in declaration order (the index the derive writes). An
        // operation with one kernel names it; one whose kernel depends on its operands lists
        // them all and is kept when any is linked.
        macro_rules! decode {
            ($($index:literal => [$($kernel:ident),+] $name:literal => $decode:expr,)*) => {
                match index {
                    $($index => {
                        if const { links_any::<K>(&[$(Kernel::$kernel),+]) } {
                            return $decode;
                        }
                        let kernels = [$(Kernel::$kernel),+];
                        *self.not_linked = Some(match &kernels[..] {
                            [only] => NotLinked::Kernel(*only),
                            _ => NotLinked::Operation($name),
                        });
                        Err(de::Error::custom("operation not linked"))
                    })*
                    _ => Err(de::Error::custom("unknown operation")),
                }
            };
        }
        let v = variant;
        decode! {
            0 => [Conv2d] "conv2d" => v.newtype_variant().map(Op::Conv2d),
            1 => [Dense] "dense" => v.newtype_variant().map(Op::Dense),
            2 => [Pool] "pool" => v.newtype_variant().map(Op::Pool),
            3 => [Add] "add" => v.newtype_variant().map(|activation| Op::Add { activation }),
            4 => [Affine] "affine" => v.newtype_variant().map(Op::Affine),
            5 => [Activation] "activation" => v.newtype_variant().map(Op::Activation),
            6 => [Softmax] "softmax" => v.unit_variant().map(|()| Op::Softmax),
            7 => [Transpose, TransposeI8, TransposeI16] "transpose" =>
                v.newtype_variant().map(Op::Transpose),
            8 => [Pad] "pad" => v.newtype_variant().map(Op::Pad),
            9 => [Conv2dI8, DepthwiseI8] "conv2d_i8" => v.newtype_variant().map(Op::Conv2dI8),
            10 => [DenseI8, DenseI8Quads, DenseI8Pairs] "dense_i8" => v.newtype_variant().map(Op::DenseI8),
            11 => [PoolI8] "pool_i8" => v.newtype_variant().map(Op::PoolI8),
            12 => [AddI8] "add_i8" => v.newtype_variant().map(Op::AddI8),
            13 => [AffineI8] "affine_i8" => v.newtype_variant().map(Op::AffineI8),
            14 => [ClampI8] "clamp_i8" => v.newtype_variant().map(Op::ClampI8),
            15 => [LookupI8] "lookup_i8" =>
                v.newtype_variant().map(|table: Span| Op::LookupI8 { table }),
            16 => [SoftmaxI8] "softmax_i8" =>
                v.newtype_variant().map(|exp_table: Span| Op::SoftmaxI8 { exp_table }),
            17 => [PadI8] "pad_i8" => v.newtype_variant().map(
                |(pad, interior, value)| Op::PadI8 { pad, interior, value }),
            18 => [DenseI8Wide, DenseI8WideQuads, DenseI8WidePairs] "dense_i8_i16" => v.newtype_variant().map(Op::DenseI8Wide),
            19 => [SoftmaxI16] "softmax_i16" => v.newtype_variant().map(
                |(exp_hi, exp_lo): (Span, Span)| Op::SoftmaxI16 { exp_hi, exp_lo }),
            20 => [Conv2dI8ToI16, Conv2dI16ToI16, Conv2dI16ToI8, DepthwiseI8ToI16,
                   DepthwiseI16ToI16, DepthwiseI16ToI8] "conv2d_i16" =>
                v.newtype_variant().map(Op::Conv2dI16),
            21 => [Concat, ConcatCopyI8] "concat" => v.newtype_variant().map(Op::Concat),
            22 => [ConcatI8] "concat_i8" => v.newtype_variant().map(Op::ConcatI8),
            23 => [Slice, SliceI8, SliceView] "slice" => v.newtype_variant().map(Op::Slice),
            24 => [Gather, GatherI8] "gather" => v.newtype_variant().map(Op::Gather),
            25 => [Mul] "mul" => v.newtype_variant().map(|activation| Op::Mul { activation }),
            26 => [MulI8] "mul_i8" => v.newtype_variant().map(Op::MulI8),
            27 => [PRelu] "prelu" => v.newtype_variant().map(|slope: Span| Op::PRelu { slope }),
            28 => [PReluI8] "prelu_i8" => v.newtype_variant().map(Op::PReluI8),
            29 => [Conv2dPool] "conv2d_pool" => v.newtype_variant().map(Op::Conv2dPool),
            30 => [Conv2dPoolI8] "conv2d_pool_i8" => v.newtype_variant().map(Op::Conv2dPoolI8),
            31 => [Conv2dPoolI16ToI8] "conv2d_pool_i16" =>
                v.newtype_variant().map(Op::Conv2dPoolI16),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::{DefaultKernels, KernelSet};

    /// The number of variants of [`Op`]: the derived decoder accepts indices below it.
    const OPS: u8 = 32;

    /// The derived decoder, the definition of the format.
    fn derived(bytes: &[u8]) -> Option<(Layer, &[u8])> {
        postcard::take_from_bytes::<Layer>(bytes).ok()
    }

    struct Nothing;
    impl Kernels for Nothing {
        const SET: KernelSet = KernelSet::EMPTY;
    }

    #[test]
    fn the_variant_count_is_the_derived_decoders() {
        // A new `Op` variant must get its arm above: the derive accepts its index, and the
        // equivalence test below then fails for it until it has one.
        let tail = [0u8; 256];
        for index in 0..=OPS {
            let mut bytes = std::vec![index];
            bytes.extend_from_slice(&tail);
            let known = postcard::take_from_bytes::<Op>(&bytes).is_ok();
            assert_eq!(known, index < OPS, "variant {index}");
            // A zeroed record of every variant is valid: the property below compares real
            // records of each, not just failures.
            let linked = take_layer::<DefaultKernels>(&bytes);
            assert_eq!(linked.is_ok(), index < OPS, "variant {index}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// On any bytes after any variant index, the linked decoder with every kernel gives what
        /// the derived decoder gives (the record and what follows it), or fails where it fails;
        /// with no kernel linked it decodes nothing and names the operation.
        #[test]
        fn every_operation_decodes_as_the_derive_does(
            index in 0u8..=OPS,
            fill in any::<u8>(),
            tail in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            // Zeros and one repeated byte give valid records of every variant; random bytes
            // give the rest (mostly invalid ones).
            let mut bytes = Vec::from([index]);
            bytes.extend(core::iter::repeat_n(fill, 96));
            bytes.extend_from_slice(&tail);
            for bytes in [&bytes[..], &[&[index][..], &[0u8; 120][..], &tail[..]].concat()[..]] {
                let want = derived(bytes);
                let got = take_layer::<DefaultKernels>(bytes).ok();
                prop_assert_eq!(got, want);
                match take_layer::<Nothing>(bytes) {
                    Err(Undecoded::NotLinked(_)) => prop_assert!(index < OPS),
                    Err(Undecoded::Malformed) => {}
                    Ok(_) => prop_assert!(false, "decoded with no kernel linked"),
                }
            }
        }
    }

    #[test]
    fn an_operation_outside_the_set_is_named() {
        struct F32Only;
        impl Kernels for F32Only {
            const SET: KernelSet = KernelSet::F32;
        }
        // A zeroed Conv2dI8 (index 9) and Conv2dI16 (20) record: valid, both outside the set.
        let record = |index: u8| [&[index][..], &[0u8; 120][..]].concat();
        assert!(derived(&record(9)).is_some());
        assert_eq!(
            take_layer::<F32Only>(&record(9)).unwrap_err(),
            Undecoded::NotLinked(NotLinked::Operation("conv2d_i8"))
        );
        assert_eq!(
            take_layer::<F32Only>(&record(10)).unwrap_err(),
            Undecoded::NotLinked(NotLinked::Operation("dense_i8"))
        );
        assert!(take_layer::<F32Only>(&record(0)).is_ok());
    }
}

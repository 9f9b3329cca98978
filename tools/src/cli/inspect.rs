//! `icefold inspect`: a blob's layers, shapes, arena plan and sizes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use icefold::engine::KernelSet;
use icefold::format::DType;

use icefold_tool::host;

use super::read_blob;

/// Arguments of `icefold inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The blob.
    blob: PathBuf,
    /// Verify the blob's signature with this public key (KEY.pub) as a device does
    /// (`Model::new_signed`); exit code 1 if it does not verify.
    #[arg(long, value_name = "KEY_PUB")]
    public_key: Option<PathBuf>,
}

pub fn run(a: &InspectArgs) -> Result<()> {
    let blob_path = a.blob.as_path();
    let blob = read_blob(blob_path)?;
    let model = host::load(blob.as_slice()).with_context(|| blob_path.display().to_string())?;
    let info = model.info();
    println!(
        "{}: {} bytes, format version {}",
        blob_path.display(),
        blob.as_slice().len(),
        icefold::format::FORMAT_VERSION
    );
    let signed = icefold::format::signature::split(blob.as_slice())
        .filter(|_| icefold::format::signature::says_signed(blob.as_slice()));
    match (&a.public_key, signed) {
        (None, None) => println!("unsigned"),
        (None, Some(_)) => println!(
            "signed (Ed25519 trailer; give --public-key KEY.pub to verify it as a device does)"
        ),
        (Some(key), _) => {
            let pk = icefold_tool::signing::read_public(key)?;
            icefold::Model::new_signed(blob.as_slice(), &pk).map_err(|e| {
                anyhow::anyhow!(
                    "{}: refused with {}: {e}",
                    blob_path.display(),
                    key.display()
                )
            })?;
            println!("signed, and the signature verifies with {}", key.display());
        }
    }
    println!(
        "input  {:?} (logical {:?}), arena offset {}",
        info.input.dims,
        host::logical_shape(info.caller_input_dims(), info.input_rank),
        info.input.offset
    );
    if let Some(t) = info.input_transpose {
        println!(
            "       written into the arena transposed ({:?} of the caller's layout) by the engine",
            t.perm
        );
    }
    println!(
        "output {:?} (logical {:?}), arena offset {}",
        info.output.dims,
        host::logical_shape(info.output.dims, info.output_rank),
        info.output.offset
    );
    let quant = |q: Option<icefold::format::Quant>| {
        q.map(|q| format!(" (scale {:e} zero point {})", q.scale, q.zero_point))
            .unwrap_or_default()
    };
    if info.input.dtype == info.output.dtype {
        println!(
            "element type {:?}{}",
            info.input.dtype,
            match (info.input.quant, info.output.quant) {
                (Some(a), Some(b)) => format!(
                    " (input scale {:e} zero point {}, output scale {:e} zero point {})",
                    a.scale, a.zero_point, b.scale, b.zero_point
                ),
                _ => String::new(),
            }
        );
    } else {
        let raw = |d: DType| if d == DType::I16 { "i16" } else { "i8" };
        println!(
            "element types: input {:?}{}, output {:?}{} (firmware: run_i8 from an [{}] input \
             into an [{}] output)",
            info.input.dtype,
            quant(info.input.quant),
            info.output.dtype,
            quant(info.output.quant),
            raw(info.input.dtype),
            raw(info.output.dtype)
        );
    }
    println!();
    println!(
        "{:>3}  {:<28} {:>16} {:>16} {:>22} {:>9}",
        "#", "op", "input", "output", "arena [start, end)", "weights"
    );
    let mut weight_bytes = 0usize;
    let layers: Vec<_> = model.layers().collect();
    let (mut views, mut view_bytes) = (0usize, 0usize);
    let (mut slice_views, mut slice_bytes) = (0usize, 0usize);
    for (i, l) in layers.iter().enumerate() {
        let (name, w) = icefold_tool::describe::describe(&l.op);
        weight_bytes += w;
        let o = l.output;
        println!(
            "{:>3}  {:<28} {:>16} {:>16} {:>22} {:>9}",
            i,
            name,
            format!("{:?}", l.inputs[0].dims),
            format!("{:?}", o.dims),
            format!("[{}, {})", o.offset, o.offset as usize + o.storage_len()),
            w
        );
        if l.is_view_slice() {
            // A slice read in place: its readers read its input's storage.
            slice_views += 1;
            slice_bytes += o.byte_len();
            let x = &l.inputs[0];
            let what = match o.view {
                Some(v) => format!(
                    "channels {}..{} of a storage of {} channels per pixel",
                    v.channel,
                    usize::from(v.channel) + usize::from(o.dims[2]),
                    v.pixel_stride
                ),
                None => format!("{} bytes into it", o.offset - x.offset),
            };
            println!(
                "     └ view of input 0 (tensor {}): {what}, read in place by its readers, not copied",
                x.id
            );
        } else if let Some(v) = o.view {
            views += 1;
            view_bytes += o.byte_len();
            let (root, at) = view_root(&layers, o.id);
            println!(
                "     └ view: channels {}..{} of tensor {root} (the output of layer {at}, {} \
                 channels per pixel), written in place",
                v.channel,
                usize::from(v.channel) + usize::from(o.dims[2]),
                v.pixel_stride
            );
        }
        if let (Some(band), Some(mid)) = (l.scratch(), l.fused_intermediate()) {
            println!(
                "     └ fused: band of {} convolution rows at [{}, {}) during this layer only, \
                 instead of the whole {:?} output ({} bytes)",
                band.dims[0],
                band.offset,
                band.offset as usize + band.byte_len(),
                mid.dims,
                mid.byte_len()
            );
        }
        let overlapped = |k: usize| {
            let x = &l.inputs[k];
            !l.in_place(k)
                && x.offset < o.offset + o.storage_len() as u32
                && o.offset < x.offset + x.storage_len() as u32
        };
        for k in (0..usize::from(l.input_count)).filter(|&k| overlapped(k)) {
            let x = &l.inputs[k];
            let (side, order) = if o.offset < x.offset {
                ("below", "first row on")
            } else {
                ("above", "last row on")
            };
            println!(
                "     └ in place: written over input {k} ([{}, {}), read for the last time here), \
                 starting {} bytes {side} it, in bands of rows from the {order}",
                x.offset,
                x.offset as usize + x.storage_len(),
                x.offset.abs_diff(o.offset),
            );
        }
        let adopted: Vec<String> = (0..usize::from(l.input_count))
            .filter(|&k| l.in_place(k) && !l.is_view_slice())
            .map(|k| k.to_string())
            .collect();
        if !adopted.is_empty() {
            println!(
                "     └ input {} already in place (its producer wrote it there), not copied",
                adopted.join(" and ")
            );
        }
    }
    println!();
    println!(
        "weight bytes {weight_bytes}, arena bytes {}",
        info.arena_bytes
    );
    let kernels: Vec<&str> = KernelSet::of(&model).iter().map(|k| k.name()).collect();
    println!(
        "kernels: {} (a firmware for this model alone links only these: \
         `Model::<model::ModelKernels>::new_checked_with_kernels` with `--emit-rust`)",
        kernels.join(", ")
    );
    if views > 0 {
        println!(
            "zero-copy concatenation: {views} tensors are views, {view_bytes} bytes written in \
             place instead of copied"
        );
    }
    if slice_views > 0 {
        println!(
            "zero-copy slices: {slice_views} slices are views of their input, {slice_bytes} \
             bytes read in place instead of copied"
        );
    }
    Ok(())
}

/// The dense tensor a view lies in, and the layer that writes it: up the concatenations that
/// read the view in place (nested concatenations share one storage).
fn view_root(layers: &[icefold::format::Layer], mut id: u16) -> (u16, usize) {
    let mut at = 0;
    for _ in 0..layers.len() {
        let adopter = layers.iter().enumerate().find(|(_, l)| {
            !l.is_view_slice()
                && (0..usize::from(l.input_count)).any(|k| l.in_place(k) && l.inputs[k].id == id)
        });
        let Some((j, l)) = adopter else { break };
        (id, at) = (l.output.id, j);
        if l.output.view.is_none() {
            break;
        }
    }
    (id, at)
}

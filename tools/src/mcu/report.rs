//! What the firmware prints: its line protocol parsed, and defmt frames decoded to those lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// What the firmware printed, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Layers the firmware ran.
    pub layers: usize,
    /// Arena bytes the firmware allocated.
    pub arena_bytes: u64,
    /// Output bytes per sample.
    pub output_bytes: usize,
    /// Element type of the outputs (`f32` or `i8`; empty if the firmware did not say).
    pub elements: String,
    /// Raw output bytes per sample.
    pub outputs: Vec<Vec<u8>>,
    /// Instructions per layer (outer: sample).
    pub layer_instructions: Vec<Vec<u64>>,
    /// Instructions of each whole inference call.
    pub run_instructions: Vec<u64>,
    /// Peak stack in bytes.
    pub stack_peak_bytes: u64,
    /// The per-layer trace of sample 0 (defmt firmware only; empty otherwise).
    pub trace: Vec<TraceRecord>,
    /// Signed loading (firmware feature `signed` only).
    pub signed: Option<SignedReport>,
    /// Clamped values per layer over all samples (firmware feature `drift` only): `(layer,
    /// values, at the low end, at the high end)`, counted layers only.
    pub drift: Vec<(usize, u64, u64, u64)>,
}

/// The `SIGNED` record: what `Model::new_signed` cost on the device and how it refused altered
/// copies of the blob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignedReport {
    /// Instructions of `Model::new_signed` (verification, then the loader's checks).
    pub verify_instructions: u64,
    /// Instructions of `Model::new_checked` on the same blob (the loader's checks alone).
    pub checked_instructions: u64,
    /// Peak stack of `new_signed` in bytes.
    pub stack_bytes: u64,
    /// The error for the blob with one byte changed.
    pub tampered: String,
    /// The error for the blob with its last byte cut off.
    pub truncated: String,
    /// The error for the blob without signature.
    pub unsigned: String,
}

/// One layer of a per-layer trace (`icefold::trace`): what the layer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Position in the schedule.
    pub layer: usize,
    /// The runtime's operation name (`icefold::format::Op::name`).
    pub op: String,
    /// Output bytes.
    pub bytes: usize,
    /// `icefold::trace::checksum` of the output bytes.
    pub checksum: u32,
}

/// Parses the firmware's line protocol (see `examples/firmware/src/main.rs`).
pub fn parse_report(text: &str) -> Result<Report> {
    let mut r = Report::default();
    let mut samples = 0usize;
    let (mut header, mut done) = (false, false);
    let mut layer_map: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut runs: BTreeMap<usize, u64> = BTreeMap::new();
    let mut outs: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let err = |what: &str| anyhow!("firmware output line {}: {what}: {line:?}", n + 1);
        let mut f = line.split_ascii_whitespace();
        let num = |s: Option<&str>| -> Result<u64> {
            s.and_then(|s| s.parse().ok())
                .ok_or_else(|| err("expected a number"))
        };
        match f.next() {
            Some("ICEFOLD-FW") => {
                if f.next() != Some("1") {
                    bail!(err("unsupported protocol version"));
                }
                header = true;
            }
            Some("MODEL") => {
                for kv in f {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err("expected key=value"))?;
                    if k == "elements" {
                        r.elements = v.to_string();
                        continue;
                    }
                    let v: u64 = v.parse().map_err(|_| err("expected a number"))?;
                    match k {
                        "layers" => r.layers = v as usize,
                        "arena" => r.arena_bytes = v,
                        "samples" => samples = v as usize,
                        "output_bytes" => r.output_bytes = v as usize,
                        _ => {}
                    }
                }
            }
            Some("OUT") => {
                // defmt firmware splits a sample's output over several records.
                let s = num(f.next())? as usize;
                let hex = f.next().unwrap_or("");
                let bytes = decode_hex(hex).ok_or_else(|| err("bad hex"))?;
                outs.entry(s).or_default().extend(bytes);
            }
            Some("TRACE") => {
                // TRACE <layer> <op> <dims> <bytes> <checksum hex>
                let layer = num(f.next())? as usize;
                let op = f
                    .next()
                    .ok_or_else(|| err("expected an op name"))?
                    .to_string();
                let _dims = f.next();
                let bytes = num(f.next())? as usize;
                let checksum = f
                    .next()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(|| err("expected a hex checksum"))?;
                r.trace.push(TraceRecord {
                    layer,
                    op,
                    bytes,
                    checksum,
                });
            }
            Some("LAYER") => {
                let (s, i, v) = (num(f.next())?, num(f.next())?, num(f.next())?);
                layer_map.insert((s as usize, i as usize), v);
            }
            Some("RUN") => {
                let (s, v) = (num(f.next())?, num(f.next())?);
                runs.insert(s as usize, v);
            }
            Some("STACK") => r.stack_peak_bytes = num(f.next())?,
            Some("DRIFT") => {
                let (layer, values) = (num(f.next())? as usize, num(f.next())?);
                r.drift
                    .push((layer, values, num(f.next())?, num(f.next())?));
            }
            Some("SIGNED") => {
                let mut signed = SignedReport::default();
                for kv in f {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err("expected key=value"))?;
                    let n = || v.parse::<u64>().map_err(|_| err("expected a number"));
                    match k {
                        "verify" => signed.verify_instructions = n()?,
                        "checked" => signed.checked_instructions = n()?,
                        "stack" => signed.stack_bytes = n()?,
                        "tampered" => signed.tampered = v.to_string(),
                        "truncated" => signed.truncated = v.to_string(),
                        "unsigned" => signed.unsigned = v.to_string(),
                        _ => {}
                    }
                }
                r.signed = Some(signed);
            }
            Some("DONE") => done = true,
            Some("ERR") => bail!(
                "the firmware reported an error: {}",
                line.trim_start_matches("ERR").trim()
            ),
            // QEMU or the panic handler may print other lines; they are shown on failure.
            _ => {}
        }
    }
    if !header || !done {
        bail!(
            "the firmware's report is incomplete (no {} line)",
            if header { "DONE" } else { "ICEFOLD-FW" }
        );
    }
    for s in 0..samples {
        let out = outs
            .remove(&s)
            .ok_or_else(|| anyhow!("the firmware reported no output for sample {s}"))?;
        if out.len() != r.output_bytes {
            bail!(
                "sample {s}: the firmware reported {} output bytes, expected {}",
                out.len(),
                r.output_bytes
            );
        }
        r.outputs.push(out);
        let layers = (0..r.layers)
            .map(|i| {
                layer_map
                    .get(&(s, i))
                    .copied()
                    .ok_or_else(|| anyhow!("sample {s}: no instruction count for layer {i}"))
            })
            .collect::<Result<Vec<_>>>()?;
        r.layer_instructions.push(layers);
        r.run_instructions.push(
            runs.get(&s)
                .copied()
                .ok_or_else(|| anyhow!("sample {s}: no instruction count for the run"))?,
        );
    }
    Ok(r)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decodes the defmt frames the firmware wrote (`stream`) with the log-string table in `elf`, one
/// line of text per frame.
pub fn decode_defmt(elf: &Path, stream: &[u8]) -> Result<String> {
    let bytes = fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let table = defmt_decoder::Table::parse(&bytes)
        .with_context(|| format!("cannot read the defmt table of {}", elf.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{} has no defmt table (.defmt section): it was not built with the firmware's \
                 `defmt` feature",
                elf.display()
            )
        })?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    let mut text = String::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let _ = writeln!(text, "{}", frame.display_message());
            }
            // The rest is an incomplete frame (or nothing): the firmware stopped mid-way.
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) if table.encoding().can_recover() => {}
            Err(defmt_decoder::DecodeError::Malformed) => bail!(
                "malformed defmt frame after {} decoded lines; was {} built from this firmware?",
                text.lines().count(),
                elf.display()
            ),
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parses_and_checks_completeness() {
        let text = "ICEFOLD-FW 1\nMODEL layers=2 arena=64 samples=1 output_bytes=4 elements=f32\n\
                    OUT 0 0000803f\nLAYER 0 0 10\nLAYER 0 1 20\nRUN 0 40\nSTACK 512\nDONE\n";
        let r = parse_report(text).unwrap();
        assert_eq!(r.outputs, vec![1.0f32.to_le_bytes().to_vec()]);
        assert_eq!(r.layer_instructions, vec![vec![10, 20]]);
        assert_eq!(r.elements, "f32");
        assert_eq!(r.run_instructions, vec![40]);
        assert_eq!(r.stack_peak_bytes, 512);
        let e = parse_report(&text.replace("DONE\n", "")).unwrap_err();
        assert!(e.to_string().contains("DONE"), "{e}");
        let e = parse_report(&text.replace("LAYER 0 1 20\n", "")).unwrap_err();
        assert!(e.to_string().contains("layer 1"), "{e}");
        let e = parse_report("ICEFOLD-FW 1\nERR load: bad magic\n").unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }
}

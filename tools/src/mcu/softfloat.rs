//! Object-level check that a code path does no floating point: in a firmware image for a core
//! without an FPU (Cortex-M0, -M3), every float operation is a call to a soft-float routine
//! (`__aeabi_fadd`, `__aeabi_f2iz`, `compiler_builtins::float::*`, libm). This walks the image's
//! call graph from chosen root functions and reports every path that reaches one.
//!
//! The call graph is read from the machine code: each function symbol's bytes are scanned for
//! Thumb `BL` instructions (the only call instruction with a direct target on ARMv6-M / ARMv7-M;
//! indirect `BLX` through a register has no static target and is reported separately). A literal
//! pool word that happens to decode as `BL` adds a spurious edge: the check can only get stricter
//! from it, never miss a call.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// One function of the image.
#[derive(Clone, Debug)]
struct Function {
    name: String,
    start: u64,
    end: u64,
}

/// What the walk found.
#[derive(Clone, Debug, Default)]
pub struct FloatReach {
    /// Root functions found in the image (mangled names).
    pub roots: Vec<String>,
    /// Functions reachable from the roots, roots included.
    pub reachable: usize,
    /// For every soft-float routine reached: the chain of calls from a root to it.
    pub float_paths: Vec<Vec<String>>,
    /// Reachable functions that contain an indirect call (`BLX Rm`), which this walk cannot
    /// follow.
    pub indirect_callers: Vec<String>,
}

/// True for the names of soft-float routines and float math functions.
pub fn is_soft_float(name: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "__aeabi_f",
        "__aeabi_d",
        "__aeabi_i2f",
        "__aeabi_ui2f",
        "__aeabi_l2f",
        "__aeabi_ul2f",
        "__aeabi_i2d",
        "__aeabi_ui2d",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || name.contains("compiler_builtins5float")
        || name.contains("4libm")
        || ["fmaxf", "fminf", "roundf", "expf", "floorf", "sqrtf"].contains(&name)
}

/// Target of a Thumb `BL` (encoding T1) at `address` from its two halfwords, if they are one.
fn bl_target(address: u64, hw1: u16, hw2: u16) -> Option<u64> {
    if hw1 & 0xF800 != 0xF000 || hw2 & 0xD000 != 0xD000 {
        return None;
    }
    let s = u32::from(hw1 >> 10) & 1;
    let imm10 = u32::from(hw1) & 0x3FF;
    let j1 = u32::from(hw2 >> 13) & 1;
    let j2 = u32::from(hw2 >> 11) & 1;
    let imm11 = u32::from(hw2) & 0x7FF;
    let i1 = !(j1 ^ s) & 1;
    let i2 = !(j2 ^ s) & 1;
    let imm = (s << 24) | (i1 << 23) | (i2 << 22) | (imm10 << 12) | (imm11 << 1);
    // Sign-extend 25 bits.
    let offset = ((imm << 7) as i32 >> 7) as i64;
    Some((address as i64 + 4 + offset) as u64)
}

/// True when `address` lies in a data region: the last mapping symbol at or before it is `$d`
/// (`marks`: address and is-data, sorted by address).
fn in_data(marks: &[(u64, bool)], address: u64) -> bool {
    let i = marks.partition_point(|&(at, _)| at <= address);
    i.checked_sub(1)
        .and_then(|i| marks.get(i))
        .is_some_and(|&(_, data)| data)
}

/// Walks the call graph of the ELF image at `elf` from every function whose mangled name
/// `is_root` accepts.
pub fn float_reach(elf: &Path, is_root: impl Fn(&str) -> bool) -> Result<FloatReach> {
    let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(&*data).context("parsing the firmware ELF")?;
    let mut functions: Vec<Function> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let start = s.address() & !1;
            Some(Function {
                name: s.name().ok()?.to_string(),
                start,
                end: start + s.size(),
            })
        })
        .collect();
    functions.sort_by_key(|f| f.start);
    functions.dedup_by_key(|f| f.start);
    if functions.is_empty() {
        bail!("{}: no function symbols (stripped image?)", elf.display());
    }
    let containing = |address: u64| -> Option<usize> {
        let i = functions.partition_point(|f| f.start <= address);
        let f = functions.get(i.checked_sub(1)?)?;
        (address < f.end).then_some(i - 1)
    };
    // Code bytes by address, from the executable sections.
    let mut code: BTreeMap<u64, &[u8]> = BTreeMap::new();
    for section in file.sections() {
        if section.kind() == object::SectionKind::Text {
            if let Ok(bytes) = section.data() {
                code.insert(section.address(), bytes);
            }
        }
    }
    let bytes_of = |f: &Function| -> Option<&[u8]> {
        let (&base, bytes) = code.range(..=f.start).next_back()?;
        let from = usize::try_from(f.start - base).ok()?;
        let to = usize::try_from(f.end - base).ok()?;
        bytes.get(from..to)
    };
    // The ELF mapping symbols (`$t` Thumb code, `$d` data, each until the next) mark the literal
    // pools inside functions: their words are constants, not instructions, and one that decodes as
    // a `BL` would add a call that does not exist.
    let mut marks: Vec<(u64, bool)> = file
        .symbols()
        .filter_map(|s| {
            let name = s.name().ok()?;
            let kind = name.split('.').next()?;
            matches!(kind, "$t" | "$d" | "$a").then_some((s.address() & !1, kind == "$d"))
        })
        .collect();
    marks.sort_unstable();
    let is_data = |address: u64| in_data(&marks, address);
    // Calls and indirect calls of every function.
    let mut calls: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); functions.len()];
    let mut indirect = vec![false; functions.len()];
    for (k, f) in functions.iter().enumerate() {
        let Some(bytes) = bytes_of(f) else { continue };
        let halfwords: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut i = 0;
        while i < halfwords.len() {
            let address = f.start + 2 * i as u64;
            if is_data(address) {
                i += 1;
                continue;
            }
            // BLX Rm: 0100 0111 1 Rm 000.
            if halfwords[i] & 0xFF87 == 0x4780 {
                indirect[k] = true;
            }
            if let Some(target) = halfwords
                .get(i + 1)
                .and_then(|&hw2| bl_target(address, halfwords[i], hw2))
            {
                if let Some(callee) = containing(target) {
                    calls[k].insert(callee);
                }
                i += 2;
                continue;
            }
            i += 1;
        }
    }
    // Breadth-first from the roots, remembering how each function was reached.
    let mut report = FloatReach::default();
    let mut parent: Vec<Option<usize>> = vec![None; functions.len()];
    let mut seen = vec![false; functions.len()];
    let mut queue = VecDeque::new();
    for (k, f) in functions.iter().enumerate() {
        if is_root(&f.name) {
            report.roots.push(f.name.clone());
            seen[k] = true;
            queue.push_back(k);
        }
    }
    while let Some(k) = queue.pop_front() {
        report.reachable += 1;
        if indirect[k] {
            report.indirect_callers.push(functions[k].name.clone());
        }
        if is_soft_float(&functions[k].name) {
            let mut path = vec![functions[k].name.clone()];
            let mut at = k;
            while let Some(p) = parent[at] {
                path.push(functions[p].name.clone());
                at = p;
            }
            path.reverse();
            report.float_paths.push(path);
            continue;
        }
        for &callee in &calls[k] {
            if !seen[callee] {
                seen[callee] = true;
                parent[callee] = Some(k);
                queue.push_back(callee);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn literal_pools_between_mapping_symbols_are_data() {
        // Code from 0x100, a literal pool at 0x140..0x14c, code again after it.
        let marks = [(0x100, false), (0x140, true), (0x14c, false)];
        assert!(!super::in_data(&marks, 0x13e));
        assert!(super::in_data(&marks, 0x140));
        assert!(super::in_data(&marks, 0x14a));
        assert!(!super::in_data(&marks, 0x14c));
        assert!(!super::in_data(&marks, 0x80), "before any mark: code");
    }

    use super::*;

    #[test]
    fn decodes_thumb_bl_forward_and_backward() {
        // `bl` from 0x1000 to 0x1234: offset 0x230.
        assert_eq!(bl_target(0x1000, 0xF000, 0xF918), Some(0x1234));
        // `bl` from 0x2000 back to 0x1000: offset -0x1004.
        assert_eq!(bl_target(0x2000, 0xF7FE, 0xFFFE), Some(0x1000));
        // Not a BL: a 16-bit `movs` pair.
        assert_eq!(bl_target(0x2000, 0x2001, 0x2102), None);
    }

    #[test]
    fn soft_float_names() {
        for name in [
            "__aeabi_fadd",
            "__aeabi_f2iz",
            "__aeabi_i2f",
            "__aeabi_dmul",
            "fmaxf",
        ] {
            assert!(is_soft_float(name), "{name}");
        }
        for name in ["__aeabi_uidiv", "__aeabi_memcpy", "__aeabi_lmul", "main"] {
            assert!(!is_soft_float(name), "{name}");
        }
    }
}

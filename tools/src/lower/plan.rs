//! Arena planning: every tensor gets an offset in one caller-provided buffer, tensors whose
//! lifetimes overlap never share bytes, and the total is as small as a simple greedy can make it.
//!
//! Greedy by size (largest first, lowest offset that fits), the strategy TFLite Micro's greedy
//! planner also uses: optimal planning is NP-hard, and on chain-like CNNs this reaches the lower
//! bound of the largest pair of adjacent tensors in practice.

use anyhow::{anyhow, Result};
use icefold::format::{Layer, ModelInfo, TensorDesc, ARENA_ALIGN};

/// A tensor's size and the span of layers during which it must stay intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLife {
    /// Bytes.
    pub bytes: usize,
    /// Index of the layer that writes it (-1: before the first layer, i.e. the model input).
    pub first: isize,
    /// Index of the last layer that reads it (the layer count for the model output).
    pub last: isize,
}

impl BufferLife {
    fn overlaps(&self, other: &BufferLife) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Offsets per buffer and the arena size they need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Byte offset of each buffer, in input order.
    pub offsets: Vec<usize>,
    /// Arena bytes.
    pub total: usize,
}

/// Place `lives` in one arena with every offset a multiple of `align`.
pub fn plan_arena(lives: &[BufferLife], align: usize) -> ArenaPlan {
    let round = |x: usize| x.div_ceil(align) * align;
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lives[i].bytes), lives[i].first));
    let mut offsets = vec![0usize; lives.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for &i in &order {
        // Occupied ranges of live-overlapping buffers, sorted by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| lives[j].overlaps(&lives[i]))
            .map(|&j| (offsets[j], offsets[j] + round(lives[j].bytes)))
            .collect();
        busy.sort_unstable();
        let need = round(lives[i].bytes);
        let mut at = 0;
        for (start, end) in busy {
            if at + need <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        total = total.max(at + need);
        placed.push(i);
    }
    ArenaPlan { offsets, total }
}

/// Recompute every tensor's arena offset from the schedule (element sizes may have changed).
pub fn replan(info: &mut ModelInfo, layers: &mut [Layer]) -> Result<()> {
    let n = layers
        .iter()
        .flat_map(|l| l.inputs.iter().chain(std::iter::once(&l.output)))
        .chain([&info.input, &info.output])
        .map(|d| d.id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut lives = vec![
        BufferLife {
            bytes: 0,
            first: isize::MAX,
            last: -1
        };
        n
    ];
    let mut touch = |d: &TensorDesc, at: isize, write: bool| {
        let b = &mut lives[d.id as usize];
        b.bytes = b.bytes.max(d.byte_len());
        if write {
            b.first = b.first.min(at);
        }
        b.last = b.last.max(at);
    };
    touch(&info.input, -1, true);
    for (i, l) in layers.iter().enumerate() {
        for d in &l.inputs[..l.input_count as usize] {
            touch(d, i as isize, false);
        }
        touch(&l.output, i as isize, true);
    }
    touch(&info.output, layers.len() as isize, false);
    for b in &mut lives {
        if b.first == isize::MAX {
            b.first = b.last;
        }
    }
    let plan = plan_arena(&lives, ARENA_ALIGN);
    let place = |d: &mut TensorDesc| d.offset = plan.offsets[d.id as usize] as u32;
    for l in layers.iter_mut() {
        l.inputs.iter_mut().for_each(place);
        place(&mut l.output);
    }
    place(&mut info.input);
    place(&mut info.output);
    info.arena_bytes = u32::try_from(plan.total).map_err(|_| anyhow!("arena beyond 4 GiB"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(bytes: usize, first: isize, last: isize) -> BufferLife {
        BufferLife { bytes, first, last }
    }

    #[test]
    fn chain_reuses_memory_of_dead_tensors() {
        // input → a → b → c: at most two neighbours are alive at once.
        let lives = [
            life(100, -1, 0),
            life(200, 0, 1),
            life(100, 1, 2),
            life(40, 2, 3),
        ];
        let plan = plan_arena(&lives, 4);
        assert_eq!(plan.total, 300);
        check_disjoint(&lives, &plan);
    }

    #[test]
    fn residual_keeps_skip_alive() {
        // x is read by layer 0 and by the add at layer 2.
        let lives = [
            life(64, -1, 2),
            life(64, 0, 1),
            life(64, 1, 2),
            life(64, 2, 3),
        ];
        let plan = plan_arena(&lives, 4);
        check_disjoint(&lives, &plan);
        assert_eq!(plan.total, 192);
    }

    #[test]
    fn offsets_are_aligned() {
        let lives = [life(3, -1, 0), life(5, 0, 1), life(7, 0, 1)];
        let plan = plan_arena(&lives, 4);
        assert!(plan.offsets.iter().all(|o| o % 4 == 0));
        check_disjoint(&lives, &plan);
    }

    fn check_disjoint(lives: &[BufferLife], plan: &ArenaPlan) {
        for i in 0..lives.len() {
            assert!(plan.offsets[i] + lives[i].bytes <= plan.total);
            for j in 0..i {
                if lives[i].overlaps(&lives[j]) {
                    let (a, b) = (plan.offsets[i], plan.offsets[j]);
                    assert!(
                        a + lives[i].bytes <= b || b + lives[j].bytes <= a,
                        "{i} and {j} collide"
                    );
                }
            }
        }
    }
}

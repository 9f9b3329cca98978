//! GlobalMaxPool: a max pooling whose window is the whole feature map (the runtime's ordinary
//! `Pool`, f32 and int8, needs nothing new).

use anyhow::{ensure, Result};

use crate::ir::graph::{FrozenOp, Pool, PoolKind};

/// The pooling of a `[C, H, W]` or `[C, L]` input over all its positions, and its `[C, 1, 1]` /
/// `[C, 1]` output shape (ONNX keeps the reduced axes).
pub(super) fn global_max_pool(s: &[usize]) -> Result<(FrozenOp, Vec<usize>)> {
    ensure!(
        s.len() == 2 || s.len() == 3,
        "GlobalMaxPool needs [C, H, W] or [C, L] per sample, got {s:?}"
    );
    let (kernel, spatial_rank) = match *s {
        [_, h, w] => ([h, w], 2),
        [_, l] => ([1, l], 1),
        _ => unreachable!("rank checked above"),
    };
    let mut shape = vec![1; s.len()];
    shape[0] = s[0];
    let pool = Pool {
        kind: PoolKind::Max,
        kernel,
        strides: [1, 1],
        pads: [0; 4],
        spatial_rank,
    };
    Ok((FrozenOp::Pool(pool), shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_whole_map() {
        let (op, shape) = global_max_pool(&[4, 5, 6]).unwrap();
        let FrozenOp::Pool(p) = op else { panic!() };
        assert_eq!(
            (p.kind, p.kernel, p.spatial_rank),
            (PoolKind::Max, [5, 6], 2)
        );
        assert_eq!(shape, vec![4, 1, 1]);
        let (op, shape) = global_max_pool(&[3, 7]).unwrap();
        let FrozenOp::Pool(p) = op else { panic!() };
        assert_eq!((p.kernel, p.spatial_rank), ([1, 7], 1));
        assert_eq!(shape, vec![3, 1]);
        let err = global_max_pool(&[8]).unwrap_err().to_string();
        assert!(err.contains("GlobalMaxPool needs"), "{err}");
    }
}

//! The layout kernels against their definitions, on shapes including 0 and 1.

use proptest::prelude::*;
use readout_kernels::elementwise::Broadcast;
use readout_kernels::layout::{concat_cols, expand, pad_cols, permute3, slice_cols, transpose};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
}

proptest! {
    #[test]
    fn transpose_moves_every_value(b in 0usize..3, m in 0usize..9, n in 0usize..9) {
        let src = values(b * m * n);
        let mut out = vec![0.0; src.len()];
        transpose(&src, b, m, n, &mut out);
        for bi in 0..b { for i in 0..m { for j in 0..n {
            prop_assert_eq!(out[bi * m * n + j * m + i], src[bi * m * n + i * n + j]);
        }}}
        let mut back = vec![0.0; src.len()];
        transpose(&out, b, n, m, &mut back);
        prop_assert_eq!(back, src);
    }

    #[test]
    fn permute3_matches_the_index_definition(d in prop::array::uniform3(0usize..5), p in 0usize..6) {
        let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let perm = perms[p];
        let src = values(d[0] * d[1] * d[2]);
        let mut out = vec![0.0; src.len()];
        permute3(&src, d, perm, &mut out);
        let od = [d[perm[0]], d[perm[1]], d[perm[2]]];
        for i in 0..od[0] { for j in 0..od[1] { for k in 0..od[2] {
            let mut idx = [0; 3];
            idx[perm[0]] = i; idx[perm[1]] = j; idx[perm[2]] = k;
            prop_assert_eq!(out[(i * od[1] + j) * od[2] + k], src[(idx[0] * d[1] + idx[1]) * d[2] + idx[2]]);
        }}}
    }

    #[test]
    fn concat_slice_and_pad_invert_each_other(rows in 0usize..7, ca in 0usize..5, cb in 0usize..5) {
        let (a, b) = (values(rows * ca), values(rows * cb).iter().map(|v| v + 100.0).collect::<Vec<_>>());
        let mut both = vec![0.0; rows * (ca + cb)];
        concat_cols(&a, ca, &b, cb, rows, &mut both);
        let (mut a2, mut b2) = (vec![0.0; a.len()], vec![0.0; b.len()]);
        slice_cols(&both, rows, ca + cb, 0, ca, &mut a2);
        slice_cols(&both, rows, ca + cb, ca, cb, &mut b2);
        prop_assert_eq!(&a2, &a);
        prop_assert_eq!(&b2, &b);
        let mut padded = vec![7.0; rows * (ca + cb)];
        pad_cols(&b, rows, cb, ca, ca + cb, &mut padded);
        for r in 0..rows {
            prop_assert!(padded[r * (ca + cb)..r * (ca + cb) + ca].iter().all(|&v| v == 0.0));
            prop_assert_eq!(&padded[r * (ca + cb) + ca..(r + 1) * (ca + cb)], &b[r * cb..(r + 1) * cb]);
        }
    }

    #[test]
    fn expand_broadcasts_each_kind(rows in 0usize..6, cols in 0usize..6) {
        let mut out = vec![0.0; rows * cols];
        expand(&[2.5], Broadcast::Scalar, rows, cols, &mut out);
        prop_assert!(out.iter().all(|&v| v == 2.5));
        let row = values(cols);
        expand(&row, Broadcast::Row, rows, cols, &mut out);
        for r in 0..rows { prop_assert_eq!(&out[r * cols..(r + 1) * cols], &row[..]); }
        let col = values(rows);
        expand(&col, Broadcast::Col, rows, cols, &mut out);
        for r in 0..rows { prop_assert!(out[r * cols..(r + 1) * cols].iter().all(|&v| v == col[r])); }
    }
}

//! Autodiff's sums of a broadcast gradient over its leading dimensions
//! (a bias's, a layer norm's gamma and beta, a transformer's positions),
//! split across rayon's pool by columns.
//!
//! `broadcast_shape` sums each broadcast dimension in turn with Flex's
//! `sum_dim`, on the thread driving the graph: for a linear layer's bias
//! that is the whole `[rows, n]` output gradient read on one core while the
//! pool waits. Flex sums a leading dimension column by column, the rows in
//! order from +0 (`scatter_add_f32`); so does [`leading`], each task a band
//! of columns, so the bits are Flex's whatever the thread count.

use burn::backend::autodiff::ops::broadcast_shape;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{DType, Shape, TensorData};
use rayon::prelude::*;

/// Columns per task.
const COLUMNS: usize = 256;

/// Below this many values the sums stay Flex's.
const MIN_LEN: usize = 1 << 15;

/// `grad` of shape `from` summed to `to` as `broadcast_shape` sums it,
/// where `to` is `from`'s trailing dimensions behind leading 1s and some
/// leading dimension is summed; `None` otherwise.
pub(crate) fn leading(grad: &[f32], from: &Shape, to: &Shape) -> Option<Vec<f32>> {
    let rank = from.num_dims();
    if to.num_dims() != rank || grad.len() != from.num_elements() {
        return None;
    }
    // The kept trailing dimensions start at `k`; those before it are 1 in `to`.
    let k = (0..=rank)
        .rev()
        .take_while(|&k| k == rank || to[k] == from[k])
        .last()?;
    if (0..k).any(|i| to[i] != 1) {
        return None;
    }
    // `broadcast_shape` sums the dimensions that differ, in increasing order.
    let summed: Vec<usize> = (0..k).map(|i| from[i]).filter(|&l| l != 1).collect();
    if summed.is_empty() {
        return None;
    }
    let mut cur: Option<Vec<f32>> = None;
    for (i, &l) in summed.iter().enumerate() {
        // The values left once this dimension is summed.
        let width = to.num_elements() * summed[i + 1..].iter().product::<usize>();
        cur = Some(columns(cur.as_deref().unwrap_or(grad), l, width));
    }
    cur
}

/// The sums over `l` rows of `width` values each, column by column, the
/// rows in order from +0.
fn columns(v: &[f32], l: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; width];
    out.par_chunks_mut(COLUMNS)
        .enumerate()
        .for_each(|(band, sums)| band_sums(sums, v, [l, width, band * COLUMNS]));
    out
}

widest! {
    /// [`columns`] for the columns `c0..c0 + sums.len()`.
    fn band_sums / band_sums_avx512 / band_sums_avx2
        (sums: &mut [f32], v: &[f32], lwc: [usize; 3]) = band_sums_body
}

/// Columns summed together, their sums held in registers across the rows
/// (four AVX-512 registers).
const HELD: usize = 64;

#[inline(always)]
fn band_sums_body(sums: &mut [f32], v: &[f32], [l, width, c0]: [usize; 3]) {
    for (p, part) in sums.chunks_mut(HELD).enumerate() {
        let at = c0 + p * HELD;
        let mut acc = [0.0f32; HELD];
        if part.len() == HELD {
            for i in 0..l {
                let row: &[f32; HELD] = v[i * width + at..][..HELD].try_into().expect("HELD");
                for (a, x) in acc.iter_mut().zip(row) {
                    *a += *x;
                }
            }
        } else {
            for i in 0..l {
                let row = &v[i * width + at..][..part.len()];
                acc.iter_mut().zip(row).for_each(|(a, x)| *a += *x);
            }
        }
        part.copy_from_slice(&acc[..part.len()]);
    }
}

/// `broadcast_shape(grad, to)` on Flex: [`leading`]'s parallel sums where
/// they apply to an f32 gradient this long, autodiff's own otherwise.
pub(crate) fn broadcast(grad: FlexTensor, to: &Shape) -> FlexTensor {
    let from = grad.layout().shape().clone();
    if grad.dtype() == DType::F32 && from.num_elements() >= MIN_LEN {
        if let Some(sums) = grad.as_slice::<f32>().and_then(|g| leading(g, &from, to)) {
            return FlexTensor::from_data(TensorData::new(sums, to.clone()));
        }
    }
    broadcast_shape::<Flex>(grad, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Tensor, TensorPrimitive};

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 4093) as f32 / 331.0 - 6.0)
            .collect()
    }

    /// Bias-, gamma- and position-shaped sums against autodiff's own, bit
    /// for bit; shapes it does not take are left to it.
    #[test]
    fn leading_sums_are_broadcast_shapes_bits() {
        let cases: [(&[usize], &[usize]); 5] = [
            (&[1536, 512], &[1, 512]),
            (&[512, 3, 512], &[1, 1, 512]),
            (&[64, 9, 100], &[1, 9, 100]),
            (&[40, 1, 30, 7], &[1, 1, 30, 7]),
            (&[3, 5, 2200], &[1, 1, 2200]),
        ];
        for (from, to) in cases {
            let (from, to) = (Shape::from(from.to_vec()), Shape::from(to.to_vec()));
            let v = values(from.num_elements());
            let t = FlexTensor::from_data(TensorData::new(v.clone(), from.clone()));
            let want = broadcast_shape::<Flex>(t.clone(), &to);
            let want = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(
                want.reshape(Shape::new([to.num_elements()])),
            ));
            let got = leading(&v, &from, &to).expect("a leading broadcast");
            let want = want.into_data().to_vec::<f32>().unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{from:?} -> {to:?}");
            // Swapping in more threads does not change a column's order.
            assert_eq!(broadcast(t, &to).into_data().as_bytes(), {
                let w: Vec<u8> = want.iter().flat_map(|x| x.to_le_bytes()).collect();
                w
            });
        }
        let s = |d: &[usize]| Shape::from(d.to_vec());
        let v = values(6 * 8);
        assert!(
            leading(&v, &s(&[6, 8]), &s(&[6, 1])).is_none(),
            "a trailing sum"
        );
        assert!(leading(&v, &s(&[6, 8]), &s(&[6, 8])).is_none(), "no sum");
        assert!(leading(&v, &s(&[2, 3, 8]), &s(&[2, 1, 8])).is_none());
    }
}

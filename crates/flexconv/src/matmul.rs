//! Flex's rank-2 f32 product with its output left unzeroed.
//!
//! Flex's matmul zero-fills a fresh output (`FlexTensor::empty`) that gemm
//! then overwrites without reading: 3-4% of a CPU transformer step and 2%
//! of an MNIST MLP step went to that memset (docs/BENCHMARKS.md). This is
//! Flex's call to gemm (same strides, same threading rule), so the same
//! bits, into memory gemm writes first.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};
use gemm::{gemm, Parallelism};

use crate::kernel::unzeroed;

/// Flex's product size (m * n * k) from which gemm runs on rayon's pool.
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// `lhs · rhs` for rank-2 f32 tensors of matching depth, strided views
/// included; `None` for anything else (other ranks or dtypes, an empty
/// product), which the caller leaves to Flex.
pub fn matmul(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<FlexTensor> {
    let (l, r) = (lhs.layout(), rhs.layout());
    let f32s = lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32;
    if !f32s || l.num_dims() != 2 || r.num_dims() != 2 {
        return None;
    }
    let ([m, k], [k2, n]) = ([l.shape()[0], l.shape()[1]], [r.shape()[0], r.shape()[1]]);
    let positive = l.strides().iter().chain(r.strides()).all(|&s| s >= 0);
    if k != k2 || m * n * k == 0 || !positive {
        return None;
    }
    let (ls, rs) = (l.strides(), r.strides());
    let a = lhs.storage::<f32>()[l.start_offset()..].as_ptr();
    let b = rhs.storage::<f32>()[r.start_offset()..].as_ptr();
    let threads = if m * n * k >= PARALLEL_THRESHOLD {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: gemm writes every one of the m x n values (it does not read
    // the destination); the strides address only the views' elements.
    let out = unsafe {
        unzeroed(m * n, |d| {
            gemm(
                m,
                n,
                k,
                d.as_mut_ptr().cast(),
                1,
                n as isize,
                false,
                a,
                ls[1],
                ls[0],
                b,
                rs[1],
                rs[0],
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                threads,
            )
        })
    };
    Some(FlexTensor::from_data(TensorData::new(out, [m, n])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorPrimitive};

    fn flex(t: Tensor<Flex, 2>) -> FlexTensor {
        t.into_primitive().tensor()
    }

    /// Plain, transposed and sliced operands, below and above the threading
    /// threshold: Flex's product bit for bit, and the rest left to Flex.
    #[test]
    fn products_are_flexs_bits() {
        let device = Default::default();
        let values = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * s) % 1009) as f32 / 97.0 - 5.0)
                .collect()
        };
        for (m, k, n) in [(3, 5, 7), (200, 300, 250)] {
            let a =
                Tensor::<Flex, 2>::from_data(TensorData::new(values(m * k, 31), [m, k]), &device);
            let b =
                Tensor::<Flex, 2>::from_data(TensorData::new(values(k * n, 17), [k, n]), &device);
            let bt =
                Tensor::<Flex, 2>::from_data(TensorData::new(values(k * n, 17), [n, k]), &device)
                    .transpose();
            let wide = Tensor::<Flex, 2>::from_data(
                TensorData::new(values(m * (k + 3), 7), [m, k + 3]),
                &device,
            )
            .slice([0..m, 2..k + 2]);
            for (x, y) in [(a.clone(), b.clone()), (a.clone(), bt), (wide, b.clone())] {
                let want = x.clone().matmul(y.clone()).into_data();
                let got = matmul(&flex(x), &flex(y)).expect("f32, rank 2");
                let got = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(got));
                assert_eq!(got.into_data().as_bytes(), want.as_bytes());
            }
        }
        let a = Tensor::<Flex, 2>::ones([2, 2], &device);
        assert!(matmul(
            &flex(a.clone().cast(DType::F16)),
            &flex(a.clone().cast(DType::F16))
        )
        .is_none());
        let empty = Tensor::<Flex, 2>::ones([2, 0], &device);
        assert!(matmul(
            &flex(empty),
            &flex(Tensor::<Flex, 2>::ones([0, 2], &device))
        )
        .is_none());
    }
}

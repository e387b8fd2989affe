//! What the flexconv tests share.

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

/// A tensor's values as f32, whatever its backend and float dtype.
pub fn data<const D: usize, B: Backend>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(FloatDType::F32).into_data().to_vec().unwrap()
}

/// Deterministic values in [-0.5, 0.5) from a seed.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

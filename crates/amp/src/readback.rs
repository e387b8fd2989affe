//! Counted device-to-host reads.
//!
//! A read from the device waits for every kernel queued before it, so one
//! read inside a training step serialises the host's kernel launches with
//! the GPU's work. The device-side scaler and the trainer read only through
//! [`read`], which counts, so that a test can prove that a non-log step
//! reads back nothing.

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Tensor, TensorData};
use std::cell::Cell;

thread_local! {
    // Per thread: a training loop reads on the thread that runs it, and
    // tests running side by side must not see each other's reads.
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Reads a tensor back to the host, counting the read.
pub fn read<B: Backend, const D: usize, K: BasicOps<B>>(t: Tensor<B, D, K>) -> TensorData {
    READS.with(|r| r.set(r.get() + 1));
    t.into_data()
}

/// Reads a float tensor as f32 values (converting from f16/bf16/f64).
pub fn read_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    read(t)
        .convert::<f32>()
        .to_vec()
        .expect("f32 data after convert")
}

/// Reads an integer tensor as i64 values.
pub fn read_i64<B: Backend, const D: usize, K: BasicOps<B>>(t: Tensor<B, D, K>) -> Vec<i64> {
    read(t)
        .convert::<i64>()
        .to_vec()
        .expect("i64 data after convert")
}

/// Reads done so far by this thread.
pub fn count() -> u64 {
    READS.with(Cell::get)
}

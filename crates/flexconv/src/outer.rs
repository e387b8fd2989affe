//! The weight gradient's products as sums of outer products, the output
//! channels in vector lanes and up to 30 kernel-row columns in registers.
//!
//! A weight gradient's product is short and very deep: `C_out x Kw*C_in`
//! outputs summed over 2,048 grid rows. For LeNet-5's second layer (16 x 30)
//! gemm chose a 16 x 6 microkernel (six sums a step, each waiting on its
//! last add): 100-120 GFLOP/s on one Emerald Rapids core in a benchmark of
//! the products alone. Here one load of a row's output gradient serves all
//! 30 columns, each a broadcast operand of a fused multiply-add: 235-245
//! GFLOP/s, the core's peak; the layer's whole weight gradient 97 -> 161
//! GFLOP/s on two cores (`benches/conv.rs`, docs/BENCHMARKS.md).
//!
//! Each sum runs over the rows in order from a zero register, one fused
//! multiply-add a row, and is then added to the accumulator: the bits do
//! not depend on the blocking.

use crate::registers::Registers;

/// Whether [`sums`] computes this weight gradient here: the CPU has
/// AVX-512, the output channels fill whole registers and the columns are
/// ragged. Where they are whole registers too (ResNet-20's 48 to 192),
/// gemm's own 64 x 6 microkernels kept pace in the same benchmark; on AVX2
/// a 12-column block measured no faster than gemm's 16 x 6.
pub(crate) fn applies(c_out: usize, columns: usize) -> bool {
    c_out.is_multiple_of(LANES)
        && !columns.is_multiple_of(LANES)
        && Registers::widest() == Registers::Avx512
}

/// Whether gemm's weight-gradient product gets its output with the output
/// channels along the microkernel's rows (`o` contiguous) rather than the
/// columns: gemm makes the longer-strided side of its output the rows and
/// pads ragged ones to whole registers. With AVX-512 its widest kernel is
/// 64 rows: 64 output channels fill it (ResNet-20's last stage: 213 -> 267
/// GFLOP/s on two cores), and 16 do where the columns are ragged. With
/// AVX2 it is 16 rows, and any multiple of 16 channels there was faster
/// alone on the AMD EPYC VM (`[16, 48]` 47-67 -> 74-89 GFLOP/s on one core,
/// `[32, 96]` 48-72 -> 78-85; docs/BENCHMARKS.md). Narrower CPUs keep the
/// AVX-512 rule (unmeasured). The same bits either way: the sums over rows
/// run in gemm's order, whichever side is which.
pub(crate) fn channels_in_rows(c_out: usize, columns: usize) -> bool {
    match Registers::widest() {
        Registers::Avx2 => c_out.is_multiple_of(16),
        _ => (!columns.is_multiple_of(16) && c_out.is_multiple_of(16)) || c_out.is_multiple_of(64),
    }
}

/// Output channels a register.
const LANES: usize = 16;
/// The most columns a block sums in registers (of AVX-512's 32: one more
/// holds the output gradient).
const MOST: usize = 30;

/// One block's operands: `m` rows; the output gradient's lanes at `dy`,
/// rows `co` apart; the block's first column at `x`, rows `ci` apart; its
/// accumulators at `acc`, columns `co` apart.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Block {
    m: usize,
    co: usize,
    ci: usize,
    dy: *const f32,
    x: *const f32,
    acc: *mut f32,
}

/// `$f::<w>(b)` for the block width `w`, one build per width listed.
#[cfg(target_arch = "x86_64")]
macro_rules! by_width {
    ($w:expr, $f:ident, $b:expr; $($n:literal)*) => {
        match $w {
            $($n => $f::<$n>($b),)*
            w => unreachable!("a block of {w} columns"),
        }
    };
}

/// `acc[j * co + o] += sum_r dy[r * co + o] * x[r * ci + j]` for rows
/// `r < m`, columns `j < kc` and channels `o < co`: the weight gradient of
/// one kernel row over a chunk of grid rows, its accumulator column-major.
///
/// # Safety
/// [`applies`] to `co` and `kc`; `dy` holds `m` rows of `co` values, `x` at
/// least `(m - 1) * ci + kc` values and `acc` `kc * co`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn sums(
    [m, co, ci, kc]: [usize; 4],
    dy: *const f32,
    x: *const f32,
    acc: *mut f32,
) {
    // Blocks of equal width: 30 columns as 16 + 14 would load each output
    // gradient row twice.
    let width = kc.div_ceil(kc.div_ceil(MOST));
    for o in (0..co).step_by(LANES) {
        for j in (0..kc).step_by(width) {
            // SAFETY: within the buffers the caller vouches for, on a CPU
            // with AVX-512 (`applies`).
            unsafe {
                let b = Block {
                    m,
                    co,
                    ci,
                    dy: dy.add(o),
                    x: x.add(j),
                    acc: acc.add(j * co + o),
                };
                by_width!(width.min(kc - j), columns, b;
                    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30)
            }
        }
    }
}

/// A block of `J` columns: `J` sums in registers over the rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn columns<const J: usize>(b: Block) {
    use std::arch::x86_64::*;
    // SAFETY: the rows, columns and accumulators lie in the buffers
    // `sums`'s caller vouches for.
    unsafe {
        let mut a = [_mm512_setzero_ps(); J];
        for r in 0..b.m {
            let d = _mm512_loadu_ps(b.dy.add(r * b.co));
            let x = b.x.add(r * b.ci);
            for (j, a) in a.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(d, _mm512_set1_ps(*x.add(j)), *a);
            }
        }
        for (j, a) in a.iter().enumerate() {
            let p = b.acc.add(j * b.co);
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *a));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The blocks give the bits of plain fused multiply-adds over the rows
    /// in order, for widths that split into equal and unequal blocks.
    #[test]
    fn the_blocks_give_the_bits_of_ordered_fused_sums() {
        let (m, ci) = (37, 6);
        for (co, kc) in [(16, 30), (16, 7), (32, 31), (16, 70)] {
            assert_eq!(
                applies(co, kc),
                std::arch::is_x86_feature_detected!("avx512f")
            );
            if !applies(co, kc) {
                continue;
            }
            let dy: Vec<f32> = (0..m * co)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let x: Vec<f32> = (0..(m - 1) * ci + kc)
                .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
                .collect();
            let start: Vec<f32> = (0..kc * co).map(|i| (i % 5) as f32 * 0.25).collect();
            let mut want = start.clone();
            for j in 0..kc {
                for o in 0..co {
                    let s = (0..m).fold(0f32, |s, r| dy[r * co + o].mul_add(x[r * ci + j], s));
                    want[j * co + o] += s;
                }
            }
            let mut got = start.clone();
            // SAFETY: `applies`; the buffers are the sizes `sums` reads.
            unsafe { sums([m, co, ci, kc], dy.as_ptr(), x.as_ptr(), got.as_mut_ptr()) };
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{co} channels, {kc} columns");
        }
        assert!(!applies(16, 48) && !applies(24, 30));
    }
}

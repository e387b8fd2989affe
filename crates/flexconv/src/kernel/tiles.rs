//! The correlation for the output pixels alone, in AVX2 registers: a tile
//! of six pixels by sixteen output channels, each pixel read from its own
//! grid row. gemm's products run over every grid row, the padding's
//! included (7%, 15% and 31% of ResNet-20's three stages' rows), and the
//! stacked ones recompute a block's lag rows too; here a tile takes any six
//! output pixels, so no padding row is computed.
//!
//! The sums are gemm's, in gemm's order, so the bits are the same: for each
//! kernel row, a fused multiply-add chain from zero over the row's `Kw x C`
//! terms in memory order, and the kernel rows' chains added in order
//! (gemm's first product writes its chain, the next ones add theirs). That
//! holds up to 512 terms a kernel row (ResNet-20's deepest is 256); gemm
//! splits deeper ones into blocks, where the tiles keep one chain.

use std::mem::MaybeUninit;

use super::Operands;
use crate::layout::Place;

/// Output channels of a tile: two AVX2 registers.
const LANES: usize = 16;
/// Output pixels of a tile: 12 sums and two taps' registers of 16, with
/// one for the broadcast input.
const PIXELS: usize = 6;

/// Whether this CPU takes the tiles for `n` output channels: AVX2 and FMA
/// without AVX-512 (gemm's 512-bit kernels are left to AVX-512 hosts,
/// where the tiles were not measured), whole 16-channel blocks.
pub(super) fn applies(n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::registers::Registers;
        let avx2 = Registers::widest() == Registers::Avx2;
        if avx2 && std::arch::is_x86_feature_detected!("fma") {
            return n.is_multiple_of(LANES);
        }
    }
    false
}

/// The taps in 16-channel blocks, each block's kernel rows one after
/// another: block `b`, kernel row `t`, term `k` at `((b * kh + t) * kc + k) * 16`,
/// so a tile reads its taps in one stream.
pub(super) struct Packed(Vec<f32>);

impl Packed {
    /// From [`Operands`]' taps: `kc` rows of `kh x n`.
    pub(super) fn new(ops: &Operands) -> Self {
        let (kh, kc, n) = (ops.g.kernel[0], ops.g.kernel[1] * ops.c, ops.n);
        assert_eq!(ops.taps.len(), kc * kh * n, "kc rows of kh x n taps");
        let mut v = Vec::with_capacity(ops.taps.len());
        for b in 0..n / LANES {
            for t in 0..kh {
                for k in 0..kc {
                    v.extend_from_slice(&ops.taps[k * kh * n + t * n + b * LANES..][..LANES]);
                }
            }
        }
        Packed(v)
    }
}

impl Operands<'_> {
    /// `out`'s rows, `n` values each, are the correlation at the pixels
    /// `place` puts in the image whose grid starts at row `base`, in
    /// pixel order: [`Operands::rows`]' values at those rows, bit for bit.
    ///
    /// # Panics
    /// If the grid does not hold every row the pixels' windows read, or
    /// the tiles do not apply ([`applies`]).
    pub(super) fn pixels(
        &self,
        packed: &Packed,
        base: usize,
        place: Place,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (g, c, n) = (self.g, self.c, self.n);
        assert!(applies(n), "AVX2 and FMA, whole 16-channel blocks");
        assert!(out.len().is_multiple_of(n), "rows of n values");
        let [kh, kw] = g.kernel;
        let (kc, step, pixels) = (kw * c, g.grid_hw()[1] * c, out.len() / n);
        let rows: Vec<usize> = (0..pixels)
            .map(|p| base + (p / place.w + place.at[0]) * place.wp + p % place.w + place.at[1])
            .collect();
        if let Some(last) = rows.iter().max() {
            assert!(
                (last + g.reach() + 1) * c <= self.grid.len(),
                "rows inside the grid"
            );
        }
        assert_eq!(packed.0.len(), kh * kc * n, "the taps of this shape");
        let mut junk = [0f32; LANES];
        for (b, taps) in packed.0.chunks_exact(kh * kc * LANES).enumerate() {
            for (tile, rows) in rows.chunks(PIXELS).enumerate() {
                let src = std::array::from_fn(|i| {
                    // SAFETY: inside the grid (asserted above); a short
                    // tile repeats its last pixel.
                    unsafe { self.grid.as_ptr().add(rows[i.min(rows.len() - 1)] * c) }
                });
                let dst = std::array::from_fn(|i| match i < rows.len() {
                    // SAFETY: pixel tile * PIXELS + i < pixels, block b of n.
                    true => {
                        unsafe { out.as_mut_ptr().add((tile * PIXELS + i) * n + b * LANES) }.cast()
                    }
                    false => junk.as_mut_ptr(),
                });
                // SAFETY: applies (asserted); each src window reads kh rows
                // `step` apart of kc values, inside the grid (asserted); taps
                // holds kh x kc x 16; each dst has 16 values to write.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx2::tile(src, dst, taps.as_ptr(), [kh, kc, step])
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("applies only on x86_64: {src:?} {dst:?} {taps:?} {step}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, PIXELS};
    use std::arch::x86_64::*;

    /// `dst[i][j] = sum_t sum_k src[i][t * step + k] * taps[(t * kc + k) * 16 + j]`,
    /// each kernel row's chain from zero, added in order of `t`.
    ///
    /// # Safety
    /// AVX2 and FMA; the reads and writes the sizes address are in bounds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        src: [*const f32; PIXELS],
        dst: [*mut f32; PIXELS],
        taps: *const f32,
        [kh, kc, step]: [usize; 3],
    ) {
        for t in 0..kh {
            let mut acc = [[_mm256_setzero_ps(); 2]; PIXELS];
            // SAFETY (this block): within the bounds the caller vouches for.
            unsafe {
                let w = taps.add(t * kc * LANES);
                let src = src.map(|s| s.add(t * step));
                for k in 0..kc {
                    let b = [
                        _mm256_loadu_ps(w.add(k * LANES)),
                        _mm256_loadu_ps(w.add(k * LANES + 8)),
                    ];
                    for (acc, s) in acc.iter_mut().zip(src) {
                        let a = _mm256_broadcast_ss(&*s.add(k));
                        acc[0] = _mm256_fmadd_ps(a, b[0], acc[0]);
                        acc[1] = _mm256_fmadd_ps(a, b[1], acc[1]);
                    }
                }
                for (acc, d) in acc.iter().zip(dst) {
                    for (h, acc) in acc.iter().enumerate() {
                        let d = d.add(h * 8);
                        let sum = match t {
                            0 => *acc,
                            _ => _mm256_add_ps(_mm256_loadu_ps(d), *acc),
                        };
                        _mm256_storeu_ps(d, sum);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{correlate_planes_by, flipped, taps, Geometry, InputGrid, OutputGrad};
    use super::*;

    /// The tiles give gemm's bits, forward and input gradient, on shapes
    /// with a short last tile (49 and 35 pixels), a kernel wider than high
    /// and a 1x1 one. Only where the CPU takes the tiles (AVX2 without
    /// AVX-512): elsewhere there is nothing to compare.
    #[test]
    fn tiles_give_the_products_bits() {
        let value = |i: usize, m: usize| ((i * 7919) % m) as f32 / m as f32 - 0.5;
        let bits = |v: Vec<f32>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut compared = 0;
        for (ci, co, [h, w], kernel, padding) in [
            (16, 16, [7, 7], [3, 3], [1, 1]),
            (32, 64, [9, 5], [3, 5], [1, 2]),
            (3, 16, [8, 8], [3, 3], [1, 1]),
            (64, 32, [5, 7], [1, 1], [0, 0]),
            (16, 32, [6, 6], [2, 2], [0, 1]),
        ] {
            let g = Geometry::of([3, ci, h, w], [co, ci, kernel[0], kernel[1]], padding)
                .expect("a geometry");
            let x: Vec<f32> = (0..3 * ci * h * w).map(|i| value(i, 997)).collect();
            let wt: Vec<f32> = (0..co * ci * kernel[0] * kernel[1])
                .map(|i| value(i, 61))
                .collect();
            let [ho, wo] = g.out();
            let dy: Vec<f32> = (0..3 * co * ho * wo).map(|i| value(i, 89)).collect();
            let (grid, dy) = (InputGrid::new(&x, &g), OutputGrad::new(&dy, &g));
            let forward_taps = taps(&wt, &g, |o, i, y, x| {
                (x * ci + i) * kernel[0] * co + y * co + o
            });
            if applies(co) {
                let run = |tiled| {
                    correlate_planes_by(
                        &grid.0,
                        &forward_taps,
                        &g,
                        [ci, co],
                        [ho, wo],
                        [0, 0],
                        tiled,
                    )
                };
                assert_eq!(bits(run(true)), bits(run(false)), "forward {ci}->{co}");
                compared += 1;
            }
            if applies(ci) {
                let back = flipped(&wt, &g);
                let run =
                    |tiled| correlate_planes_by(&dy.0, &back, &g, [co, ci], [h, w], padding, tiled);
                assert_eq!(bits(run(true)), bits(run(false)), "input grad {ci}->{co}");
                compared += 1;
            }
        }
        if !applies(16) {
            eprintln!("no tiles on this CPU: nothing compared");
        } else {
            assert_eq!(compared, 9);
        }
    }
}

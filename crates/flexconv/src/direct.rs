//! The forward of a convolution too shallow for matrix products: a first
//! layer on 1- to 4-channel images (LeNet-5's and ResNet's), where a
//! product row would have 3 to 25 terms. Flex computes these one kernel
//! tap at a time over the whole output plane, loading and storing every
//! output value once per tap (a quarter of a LeNet-5 step, docs/BENCHMARKS.md);
//! here 16 output columns of 4 output channels stay in registers across
//! all the taps, read from a zero-padded copy of the image.
//!
//! Each output sums its terms in Flex's order (input channel, kernel row,
//! kernel column; multiply, then add, from +0), so the values are Flex's bit
//! for bit: the padding's zero products Flex skips leave a sum unchanged,
//! since a sum that starts at +0 is never -0 and `v + ±0 = v` otherwise
//! (a non-finite weight aside, which makes the whole output non-finite).

use rayon::prelude::*;

use crate::kernel::Geometry;

/// Output columns summed together (one AVX-512 register, two AVX ones).
const LANES: usize = 16;
/// Output channels summed together, sharing each input load.
const BLOCK: usize = 4;

/// Whether [`forward`] computes this convolution with Flex's bits: the
/// shapes Flex gives its own small-channel kernel (1 to 4 input channels,
/// 2 to 16 output channels, not 1x1), among the shallow ones.
pub fn applies(g: &Geometry) -> bool {
    g.shallow() && (1..=4).contains(&g.c_in) && (2..=16).contains(&g.c_out) && g.kernel != [1, 1]
}

/// The output `[N, C_out, Ho, Wo]` (no bias) of the input `[N, C_in, H, W]`
/// and the weight `[C_out, C_in, Kh, Kw]`, one image per task.
pub fn forward(x: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    let [ho, wo] = g.out();
    let row = (wo.div_ceil(LANES) * LANES + g.kernel[1] - 1).max(g.wp());
    let taps = taps(weight, g);
    let mut out = vec![0f32; g.batch * g.c_out * ho * wo];
    out.par_chunks_mut(g.c_out * ho * wo)
        .zip(x.par_chunks(g.c_in * g.height * g.width))
        .for_each(|(dst, src)| image(dst, &padded(src, g, row), &taps, g, row));
    out
}

/// One image's channels zero-padded, each `Hp` rows of `row` values.
fn padded(src: &[f32], g: &Geometry, row: usize) -> Vec<f32> {
    let (hp, [pt, pl]) = (g.hp(), g.padding);
    let mut out = vec![0f32; g.c_in * hp * row];
    for (plane, dst) in src
        .chunks_exact(g.height * g.width)
        .zip(out.chunks_exact_mut(hp * row))
    {
        for (line, d) in plane
            .chunks_exact(g.width)
            .zip(dst[pt * row..].chunks_mut(row))
        {
            d[pl..pl + g.width].copy_from_slice(line);
        }
    }
    out
}

/// The weight as `[C_out / BLOCK][C_in][Kh][Kw]` groups of BLOCK output
/// channels' values, zero where the last group has fewer.
fn taps(weight: &[f32], g: &Geometry) -> Vec<[f32; BLOCK]> {
    let per_out = g.c_in * g.kernel[0] * g.kernel[1];
    let blocks = g.c_out.div_ceil(BLOCK);
    let mut taps = vec![[0f32; BLOCK]; blocks * per_out];
    for (o, w) in weight.chunks_exact(per_out).enumerate() {
        for (k, v) in w.iter().enumerate() {
            taps[(o / BLOCK) * per_out + k][o % BLOCK] = *v;
        }
    }
    taps
}

/// One image, on the widest vector unit this CPU has (the same arithmetic
/// on each: no fused multiply-add, so the same bits).
fn image(dst: &mut [f32], src: &[f32], taps: &[[f32; BLOCK]], g: &Geometry, row: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { image_avx512(dst, src, taps, g, row) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { image_avx2(dst, src, taps, g, row) };
        }
    }
    image_body(dst, src, taps, g, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn image_avx512(
    dst: &mut [f32],
    src: &[f32],
    taps: &[[f32; BLOCK]],
    g: &Geometry,
    row: usize,
) {
    image_body(dst, src, taps, g, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn image_avx2(
    dst: &mut [f32],
    src: &[f32],
    taps: &[[f32; BLOCK]],
    g: &Geometry,
    row: usize,
) {
    image_body(dst, src, taps, g, row)
}

/// `dst[o][y][x] = sum_(i, t, s) w[o][i][t][s] * src[i][y + t][x + s]`, in
/// that order, for LANES columns of BLOCK channels at a time.
#[inline(always)]
fn image_body(dst: &mut [f32], src: &[f32], taps: &[[f32; BLOCK]], g: &Geometry, row: usize) {
    let ([kh, kw], [ho, wo], hp) = (g.kernel, g.out(), g.hp());
    let per_out = g.c_in * kh * kw;
    for (ob, block) in taps.chunks_exact(per_out).enumerate() {
        let channels = BLOCK.min(g.c_out - ob * BLOCK);
        for y in 0..ho {
            for x0 in (0..wo).step_by(LANES) {
                let mut acc = [[0f32; LANES]; BLOCK];
                let mut k = 0;
                for i in 0..g.c_in {
                    for t in 0..kh {
                        let line = &src[(i * hp + y + t) * row + x0..][..LANES + kw - 1];
                        for s in 0..kw {
                            let v: [f32; LANES] = line[s..s + LANES].try_into().expect("padded");
                            accumulate(&mut acc, &v, &block[k]);
                            k += 1;
                        }
                    }
                }
                let n = LANES.min(wo - x0);
                for (b, a) in acc.iter().enumerate().take(channels) {
                    let o = ob * BLOCK + b;
                    dst[(o * ho + y) * wo + x0..][..n].copy_from_slice(&a[..n]);
                }
            }
        }
    }
}

/// `acc[b][j] += w[b] * v[j]`, a multiply then an add (never fused: Flex's bits).
#[inline(always)]
fn accumulate(acc: &mut [[f32; LANES]; BLOCK], v: &[f32; LANES], w: &[f32; BLOCK]) {
    for b in 0..BLOCK {
        for j in 0..LANES {
            acc[b][j] += w[b] * v[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector unit's build gives the same bits (the tests elsewhere
    /// see only the widest one this machine has).
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let g = Geometry {
            batch: 1,
            c_in: 2,
            c_out: 6,
            height: 9,
            width: 37,
            kernel: [3, 3],
            padding: [1, 1],
        };
        let n = g.c_in * g.height * g.width;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..6 * 2 * 9)
            .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
            .collect();
        let [ho, wo] = g.out();
        let row = (wo.div_ceil(LANES) * LANES + g.kernel[1] - 1).max(g.wp());
        let (src, taps) = (padded(&x, &g, row), taps(&w, &g));
        let run = |f: &dyn Fn(&mut [f32])| {
            let mut out = vec![0f32; g.c_out * ho * wo];
            f(&mut out);
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let plain = run(&|d| image_body(d, &src, &taps, &g, row));
        assert_eq!(run(&|d| image(d, &src, &taps, &g, row)), plain);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            assert_eq!(
                run(&|d| unsafe { image_avx2(d, &src, &taps, &g, row) }),
                plain
            );
        }
    }
}

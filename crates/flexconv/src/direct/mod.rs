//! The forward and the weight gradient of a convolution too shallow for
//! matrix products: a first layer on 1- to 4-channel images (LeNet-5's and
//! ResNet's), where a product row would have 3 to 25 terms. Flex computes
//! the forward one kernel tap at a time over the whole output plane, loading
//! and storing every output value once per tap (a quarter of a LeNet-5
//! step, docs/BENCHMARKS.md), and the shifted products' weight gradient is
//! a gemm with a 6 x 5 result over 2,048-row sums. Here 16 output columns of
//! 4 output channels stay in registers across all the taps (forward), or 16
//! columns' products of one tap for 4 channels across the whole image
//! (weight gradient), read from a zero-padded copy of the image. On
//! AVX-512, the `avx512` module does both with intrinsics: blocks of 4 to 8
//! channels whose sums stay in registers, the weight gradient with fused
//! multiply-adds.
//!
//! Each forward output sums its terms in Flex's order (input channel,
//! kernel row, kernel column; multiply, then add, from +0), so the values
//! are Flex's bit for bit: the padding's zero products Flex skips leave a
//! sum unchanged, since a sum that starts at +0 is never -0 and
//! `v + ±0 = v` otherwise (a non-finite weight aside, which makes the whole
//! output non-finite).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::kernel::{unzeroed, Geometry};

#[cfg(target_arch = "x86_64")]
mod avx512;

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
    let row = padded_row(g);
    let taps = taps(weight, g);
    // SAFETY: image writes every output of its image.
    unsafe {
        unzeroed(g.batch * g.c_out * ho * wo, |out| {
            out.par_chunks_mut(g.c_out * ho * wo)
                .zip(x.par_chunks(g.c_in * g.height * g.width))
                .for_each(|(dst, src)| image(dst, &padded(src, g, row), &taps, g, row))
        })
    }
}

/// The weight gradient `[C_out, C_in, Kh, Kw]` from the input `[N, C_in, H, W]`
/// and the output gradient `[N, C_out, Ho, Wo]`: per image, each weight's
/// products summed in 16 lanes of output columns held in registers, the
/// lanes then added in order, and the images' sums added in image order,
/// so the bits do not depend on the thread count.
pub fn weight_grad(x: &[f32], dy: &[f32], g: &Geometry) -> Vec<f32> {
    let [ho, wo] = g.out();
    let row = padded_row(g);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(g.c_in * g.height * g.width)
        .zip(dy.par_chunks(g.c_out * ho * wo))
        .map(|(src, d)| image_grad(&padded(src, g, row), &lanes(d, g), g, row))
        .collect();
    let mut sum = vec![0f32; g.c_out * g.c_in * g.kernel[0] * g.kernel[1]];
    for p in &partials {
        sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    sum
}

/// One image's output gradient with each row widened to whole LANES with
/// zeros, `[C_out][Ho][Wo rounded up]`.
fn lanes(dy: &[f32], g: &Geometry) -> Vec<f32> {
    let [_, wo] = g.out();
    let width = lane_width(g);
    let mut out = vec![0f32; dy.len() / wo * width];
    for (line, d) in dy.chunks_exact(wo).zip(out.chunks_exact_mut(width)) {
        d[..wo].copy_from_slice(line);
    }
    out
}

/// The output width rounded up to whole LANES.
fn lane_width(g: &Geometry) -> usize {
    g.out()[1].div_ceil(LANES) * LANES
}

/// The length of a padded image row: every tap of every lane block reads
/// inside it.
fn padded_row(g: &Geometry) -> usize {
    (lane_width(g) + g.kernel[1] - 1).max(g.wp())
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

widest! {
    /// One image's forward: the `avx512` module's on AVX-512, else
    /// [`image_body`] built for AVX2 or the baseline; Flex's bits on every
    /// path.
    fn image / avx512::image / image_avx2
        (dst: &mut [MaybeUninit<f32>], src: &[f32], taps: &[[f32; BLOCK]], g: &Geometry, row: usize) = image_body
}

widest! {
    /// One image's weight gradient: the `avx512` module's on AVX-512 (fused
    /// multiply-adds), else [`image_grad_body`] built for AVX2 or the
    /// baseline.
    fn image_grad / avx512::image_grad / image_grad_avx2
        (src: &[f32], dy: &[f32], g: &Geometry, row: usize) -> Vec<f32> = image_grad_body
}

/// `dw[o][i][t][s] = sum_(y, x) dy[o][y][x] * src[i][y + t][x + s]` for one
/// image, BLOCK output channels of up to [`TAPS`] kernel columns at a time
/// (each output gradient load serves them all, and their sums are
/// independent chains, not one waiting on the last add), summed per lane
/// over rows and column blocks, then across the lanes in order.
#[inline(always)]
fn image_grad_body(src: &[f32], dy: &[f32], g: &Geometry, row: usize) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let per_out = g.c_in * kh * kw;
    let mut out = vec![0f32; g.c_out * per_out];
    for o0 in (0..g.c_out).step_by(BLOCK) {
        for i in 0..g.c_in {
            for t in 0..kh {
                for s0 in (0..kw).step_by(TAPS) {
                    let at = Tap { o0, i, t, s0 };
                    match kw - s0 {
                        1 => tap_grads::<1>(src, dy, g, row, at, &mut out),
                        2 => tap_grads::<2>(src, dy, g, row, at, &mut out),
                        3 => tap_grads::<3>(src, dy, g, row, at, &mut out),
                        4 => tap_grads::<4>(src, dy, g, row, at, &mut out),
                        _ => tap_grads::<TAPS>(src, dy, g, row, at, &mut out),
                    }
                }
            }
        }
    }
    out
}

/// Kernel columns whose weight gradients [`image_grad_body`] sums together:
/// with BLOCK channels, 20 AVX-512 registers of sums.
const TAPS: usize = 5;

/// The first of the taps [`tap_grads`] computes: output channels `o0..`,
/// input channel `i`, kernel row `t`, kernel columns `s0..`.
#[derive(Clone, Copy)]
struct Tap {
    o0: usize,
    i: usize,
    t: usize,
    s0: usize,
}

/// The weight gradients of `S` neighbouring kernel columns from [`Tap`] on,
/// for BLOCK output channels, into `out` (`[C_out][C_in][Kh][Kw]`).
#[inline(always)]
fn tap_grads<const S: usize>(
    src: &[f32],
    dy: &[f32],
    g: &Geometry,
    row: usize,
    Tap { o0, i, t, s0 }: Tap,
    out: &mut [f32],
) {
    let ([kh, kw], [ho, _], hp) = (g.kernel, g.out(), g.hp());
    let (width, channels) = (lane_width(g), BLOCK.min(g.c_out - o0));
    let mut acc = [[[0f32; LANES]; BLOCK]; S];
    for y in 0..ho {
        let line = &src[(i * hp + y + t) * row + s0..][..width + S - 1];
        for x0 in (0..width).step_by(LANES) {
            let mut d = [[0f32; LANES]; BLOCK];
            for (b, d) in d.iter_mut().enumerate().take(channels) {
                let at = ((o0 + b) * ho + y) * width + x0;
                *d = dy[at..at + LANES].try_into().expect("lanes");
            }
            for (s, acc) in acc.iter_mut().enumerate() {
                let v: [f32; LANES] = line[x0 + s..x0 + s + LANES].try_into().expect("padded");
                for b in 0..BLOCK {
                    for j in 0..LANES {
                        acc[b][j] += d[b][j] * v[j];
                    }
                }
            }
        }
    }
    let per_out = g.c_in * kh * kw;
    for (s, acc) in acc.iter().enumerate() {
        for (b, a) in acc.iter().enumerate().take(channels) {
            let k = (i * kh + t) * kw + s0 + s;
            out[(o0 + b) * per_out + k] = a.iter().fold(0.0, |sum, v| sum + v);
        }
    }
}

/// `dst[o][y][x] = sum_(i, t, s) w[o][i][t][s] * src[i][y + t][x + s]`, in
/// that order, for LANES columns of BLOCK channels of [`ROWS`] output rows
/// at a time (independent sums: one row's chain of adds waited on itself).
#[inline(always)]
fn image_body(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    taps: &[[f32; BLOCK]],
    g: &Geometry,
    row: usize,
) {
    let [ho, wo] = g.out();
    let per_out = g.c_in * g.kernel[0] * g.kernel[1];
    for (ob, block) in taps.chunks_exact(per_out).enumerate() {
        for y in (0..ho).step_by(ROWS) {
            for x0 in (0..wo).step_by(LANES) {
                let at = [ob, y, x0];
                match ho - y {
                    1 => outputs::<1>(dst, src, block, g, row, at),
                    _ => outputs::<ROWS>(dst, src, block, g, row, at),
                }
            }
        }
    }
}

/// Output rows [`image_body`] sums together.
const ROWS: usize = 2;

/// LANES columns from `x0` of `R` output rows from `y` of channel block
/// `ob`, each output's terms in Flex's order.
#[inline(always)]
fn outputs<const R: usize>(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    block: &[[f32; BLOCK]],
    g: &Geometry,
    row: usize,
    [ob, y, x0]: [usize; 3],
) {
    let ([kh, kw], [ho, wo], hp) = (g.kernel, g.out(), g.hp());
    let mut acc = [[[0f32; LANES]; BLOCK]; R];
    let mut k = 0;
    for i in 0..g.c_in {
        for t in 0..kh {
            for s in 0..kw {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let line = &src[(i * hp + y + r + t) * row + x0 + s..][..LANES];
                    let v: [f32; LANES] = line.try_into().expect("padded");
                    accumulate(acc, &v, &block[k]);
                }
                k += 1;
            }
        }
    }
    let (n, channels) = (LANES.min(wo - x0), BLOCK.min(g.c_out - ob * BLOCK));
    // Every block's sums visited and those of missing channels skipped: a
    // loop that stopped at `channels` indexed them at run time and kept
    // some on the stack, stored after every add.
    for (r, acc) in acc.iter().enumerate() {
        for (b, a) in acc.iter().enumerate() {
            if b >= channels {
                continue;
            }
            let d = &mut dst[((ob * BLOCK + b) * ho + y + r) * wo + x0..][..n];
            // Whole lanes as one store (a memcpy call per row cost 3% of a
            // LeNet-5 step), the last columns one by one.
            match <&mut [MaybeUninit<f32>; LANES]>::try_from(&mut *d) {
                Ok(d) => *d = a.map(MaybeUninit::new),
                Err(_) => d.iter_mut().zip(a).for_each(|(d, v)| _ = d.write(*v)),
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
        let row = padded_row(&g);
        let (src, taps) = (padded(&x, &g, row), taps(&w, &g));
        let run = |f: &dyn Fn(&mut [MaybeUninit<f32>])| {
            let mut out = vec![MaybeUninit::new(f32::NAN); g.c_out * ho * wo];
            f(&mut out);
            out.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect::<Vec<_>>()
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
        let dy: Vec<f32> = (0..g.c_out * ho * wo)
            .map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5)
            .collect();
        let lanes = lanes(&dy, &g);
        let bits = |v: Vec<f32>| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let plain = bits(image_grad_body(&src, &lanes, &g, row));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            assert_eq!(
                bits(unsafe { image_grad_avx2(&src, &lanes, &g, row) }),
                plain
            );
        }
    }

    /// AVX-512's weight gradient sums each lane's products in row and
    /// column-block order with fused multiply-adds, then the lanes in order,
    /// for blocks of 8 and 6 channels and every tap count.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_fused_weight_gradient_sums_lanes_in_order() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for (c_in, c_out, kernel) in [(1, 6, [5, 5]), (2, 11, [3, 3]), (1, 16, [2, 7])] {
            let g = Geometry {
                batch: 1,
                c_in,
                c_out,
                height: 9,
                width: 37,
                kernel,
                padding: [1, 2],
            };
            let ([ho, wo], width) = (g.out(), lane_width(&g));
            let x: Vec<f32> = (0..c_in * 9 * 37)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let dy: Vec<f32> = (0..c_out * ho * wo)
                .map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5)
                .collect();
            let row = padded_row(&g);
            let (src, d) = (padded(&x, &g, row), lanes(&dy, &g));
            let mut want = Vec::new();
            for o in 0..c_out {
                for i in 0..c_in {
                    for t in 0..kernel[0] {
                        for s in 0..kernel[1] {
                            let mut sums = [0f32; LANES];
                            for y in 0..ho {
                                for x in 0..width {
                                    let v = src[(i * g.hp() + y + t) * row + x + s];
                                    let l = &mut sums[x % LANES];
                                    *l = d[(o * ho + y) * width + x].mul_add(v, *l);
                                }
                            }
                            want.push(sums.iter().fold(0f32, |a, v| a + v).to_bits());
                        }
                    }
                }
            }
            // SAFETY: the CPU has AVX-512F.
            let got = unsafe { avx512::image_grad(&src, &d, &g, row) };
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{c_in} -> {c_out}, {kernel:?}");
        }
    }

    /// The weight gradient sums the images in their order, whatever the
    /// number of threads.
    #[test]
    fn the_weight_gradient_has_the_same_bits_on_any_thread_count() {
        let g = Geometry {
            batch: 37,
            c_in: 1,
            c_out: 6,
            height: 28,
            width: 28,
            kernel: [5, 5],
            padding: [2, 2],
        };
        let x: Vec<f32> = (0..37 * 784)
            .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let dy: Vec<f32> = (0..37 * 6 * 784)
            .map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5)
            .collect();
        let on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let dw = pool.install(|| weight_grad(&x, &dy, &g));
            dw.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = on(1);
        assert_eq!(on(2), one);
        assert_eq!(on(5), one);
    }
}

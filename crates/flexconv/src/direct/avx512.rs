//! [`super`]'s forward and weight gradient on AVX-512, with intrinsics, the
//! sums of every block in registers.
//!
//! The forward keeps Flex's bits: each output's products added from +0 in
//! input channel, kernel row, kernel column order, a multiply and then an
//! add. The plain loop's 4 channels came in blocks of 4 and 2 for LeNet-5's
//! 6, and two of its eight sums were stored to the stack after every add;
//! here the block is 4, 6 or 8 channels, whichever wastes fewest.
//!
//! The weight gradient uses fused multiply-adds. The plain loop's 4
//! channels x 5 taps of sums did not stay in registers (each add stored to
//! the stack) and, unfused, took two instructions a term: 10.5% of a
//! LeNet-5 step's samples for a twentieth of its products. Here `B`
//! channels of `S` taps are summed per lane over the image in registers,
//! the `B` output gradient vectors loaded once for the `S` taps (3 x 5 for
//! LeNet-5's first layer: 4.8% of the samples); the lanes are then added
//! in order, as the plain loop does.
//!
//! Sums are read back from registers in loops small enough to unroll: a
//! loop that indexed them at run time kept them on the stack, stored after
//! every add (one 64-byte store a cycle: half the speed).

use super::{lane_width, Geometry, Tap, BLOCK, LANES, ROWS, TAPS};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// One image's weight gradient (see [`super::image_grad_body`]).
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn image_grad(src: &[f32], dy: &[f32], g: &Geometry, row: usize) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let mut out = vec![0f32; g.c_out * g.c_in * kh * kw];
    let ops = Operands { src, dy, g, row };
    for i in 0..g.c_in {
        for t in 0..kh {
            for s0 in (0..kw).step_by(TAPS) {
                let at = Tap { o0: 0, i, t, s0 };
                // SAFETY: the CPU has AVX-512F (the caller's contract).
                unsafe {
                    match kw - s0 {
                        1 => blocks::<6, 1>(&ops, at, &mut out),
                        2 => blocks::<6, 2>(&ops, at, &mut out),
                        3 => blocks::<6, 3>(&ops, at, &mut out),
                        4 => blocks::<4, 4>(&ops, at, &mut out),
                        _ => blocks::<3, TAPS>(&ops, at, &mut out),
                    }
                }
            }
        }
    }
    out
}

/// One image's padded input, its output gradient in lanes
/// (`[C_out][Ho][lane_width]`) and the shape.
struct Operands<'a> {
    src: &'a [f32],
    dy: &'a [f32],
    g: &'a Geometry,
    row: usize,
}

/// The taps from `at` for every block of `B` output channels.
#[target_feature(enable = "avx512f")]
unsafe fn blocks<const B: usize, const S: usize>(ops: &Operands, at: Tap, out: &mut [f32]) {
    for o0 in (0..ops.g.c_out).step_by(B) {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { taps::<B, S>(ops, Tap { o0, ..at }, out) };
    }
}

/// The weight gradients of `S` kernel columns from `s0` for `B` output
/// channels from `o0`; channels past the last repeat the last one's output
/// gradient and are not written.
#[target_feature(enable = "avx512f")]
unsafe fn taps<const B: usize, const S: usize>(ops: &Operands, at: Tap, out: &mut [f32]) {
    let Operands { src, dy, g, row } = *ops;
    let Tap { o0, i, t, s0 } = at;
    let ([kh, kw], [ho, _], hp) = (g.kernel, g.out(), g.hp());
    let (width, channels) = (lane_width(g), B.min(g.c_out - o0));
    // Each channel's output gradient.
    let rows: [&[f32]; B] = std::array::from_fn(|b| {
        let o = o0 + b.min(channels - 1);
        &dy[o * ho * width..][..ho * width]
    });
    let line = &src[(i * hp + t) * row + s0..];
    assert!(
        line.len() >= ho.saturating_sub(1) * row + width + S - 1,
        "padded rows"
    );
    let mut acc = [[_mm512_setzero_ps(); S]; B];
    // One loop over every row's column blocks.
    let (mut y, mut x0) = (0, 0);
    for _ in 0..ho * (width / LANES) {
        // SAFETY: x0 + s + LANES <= width + S - 1 past row y's start,
        // within `line` (asserted); a channel's row y ends within its
        // slice.
        unsafe {
            let d: [__m512; B] =
                std::array::from_fn(|b| _mm512_loadu_ps(rows[b].as_ptr().add(y * width + x0)));
            for s in 0..S {
                let v = _mm512_loadu_ps(line.as_ptr().add(y * row + x0 + s));
                for (acc, d) in acc.iter_mut().zip(&d) {
                    acc[s] = _mm512_fmadd_ps(*d, v, acc[s]);
                }
            }
        }
        x0 += LANES;
        if x0 == width {
            (y, x0) = (y + 1, 0);
        }
    }
    // The sums stored in a loop small enough to unroll, so that they
    // are indexed by constants and kept in registers: a loop that also
    // added up the lanes indexed them at run time, and they lived on the
    // stack, stored after every add (one 64-byte store a cycle: half
    // the speed).
    let mut lanes = [[[0f32; LANES]; S]; B];
    for (acc, lanes) in acc.iter().zip(&mut lanes) {
        for (a, l) in acc.iter().zip(lanes) {
            // SAFETY: LANES values to a LANES array.
            unsafe { _mm512_storeu_ps(l.as_mut_ptr(), *a) };
        }
    }
    let sums = lanes.map(|l| l.map(|l| l.iter().fold(0.0, |sum, v| sum + v)));
    let per_out = g.c_in * kh * kw;
    for (b, sums) in sums.iter().enumerate().take(channels) {
        let k = (i * kh + t) * kw + s0;
        out[(o0 + b) * per_out + k..][..S].copy_from_slice(sums);
    }
}

/// One image's forward (see [`super::image_body`]), from the taps in
/// blocks of BLOCK channels.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn image(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    taps: &[[f32; BLOCK]],
    g: &Geometry,
    row: usize,
) {
    let co = g.c_out;
    let block = [8, 6, 4]
        .into_iter()
        .min_by_key(|b| co.div_ceil(*b) * b)
        .expect("three sizes");
    let ops = Forward {
        dst,
        src,
        taps: taps.as_flattened(),
        g,
        row,
    };
    // SAFETY: the CPU has AVX-512F (the caller's contract).
    unsafe {
        match block {
            8 => channel_blocks::<8>(ops),
            6 => channel_blocks::<6>(ops),
            _ => channel_blocks::<4>(ops),
        }
    }
}

/// One image's output, padded input, taps (flattened) and shape.
struct Forward<'a> {
    dst: &'a mut [MaybeUninit<f32>],
    src: &'a [f32],
    taps: &'a [f32],
    g: &'a Geometry,
    row: usize,
}

/// Every output, `B` channels of ROWS rows of LANES columns at a time.
#[target_feature(enable = "avx512f")]
unsafe fn channel_blocks<const B: usize>(mut ops: Forward) {
    let [ho, wo] = ops.g.out();
    for o0 in (0..ops.g.c_out).step_by(B) {
        for y in (0..ho).step_by(ROWS) {
            for x0 in (0..wo).step_by(LANES) {
                // SAFETY: the CPU has AVX-512F (the caller's contract).
                unsafe {
                    match ho - y {
                        1 => outputs::<B, 1>(&mut ops, [o0, y, x0]),
                        _ => outputs::<B, ROWS>(&mut ops, [o0, y, x0]),
                    }
                }
            }
        }
    }
}

/// LANES columns from `x0` of `R` rows from `y` of `B` channels from `o0`;
/// channels past the last repeat the last one's taps and are not written.
#[target_feature(enable = "avx512f")]
unsafe fn outputs<const B: usize, const R: usize>(ops: &mut Forward, [o0, y, x0]: [usize; 3]) {
    let Forward {
        src, taps, g, row, ..
    } = *ops;
    let ([kh, kw], [ho, wo], hp) = (g.kernel, g.out(), g.hp());
    let per_out = g.c_in * kh * kw;
    let channels = B.min(g.c_out - o0);
    // Channel o's k-th tap is at taps[((o / BLOCK) * per_out + k) * BLOCK + o % BLOCK].
    let w: [&[f32]; B] = std::array::from_fn(|b| {
        let o = o0 + b.min(channels - 1);
        &taps[(o / BLOCK) * per_out * BLOCK + o % BLOCK..][..(per_out - 1) * BLOCK + 1]
    });
    let base = &src[y * row + x0..];
    let last = ((g.c_in - 1) * hp + R - 1 + kh - 1) * row + kw - 1 + LANES;
    assert!(base.len() >= last, "padded rows");
    let mut acc = [[_mm512_setzero_ps(); B]; R];
    // One loop over the taps in Flex's order, `at` the tap's offset.
    let (mut t, mut s, mut at) = (0, 0, 0);
    for k in 0..per_out {
        // SAFETY: `at + r * row + LANES <= last`, within `base` (asserted);
        // `k * BLOCK` is within each channel's tap slice.
        unsafe {
            for (r, acc) in acc.iter_mut().enumerate() {
                let v = _mm512_loadu_ps(base.as_ptr().add(at + r * row));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    let p = _mm512_mul_ps(_mm512_set1_ps(*w.get_unchecked(k * BLOCK)), v);
                    *acc = _mm512_add_ps(*acc, p);
                }
            }
        }
        (s, at) = (s + 1, at + 1);
        if s == kw {
            (s, t, at) = (0, t + 1, at + row - kw);
            if t == kh {
                (t, at) = (0, at + (hp - kh) * row);
            }
        }
    }
    // Stored in a loop small enough to unroll (the module's note).
    let mut sums = [[[0f32; LANES]; B]; R];
    for (acc, sums) in acc.iter().zip(&mut sums) {
        for (a, l) in acc.iter().zip(sums) {
            // SAFETY: LANES values to a LANES array.
            unsafe { _mm512_storeu_ps(l.as_mut_ptr(), *a) };
        }
    }
    let n = LANES.min(wo - x0);
    for (r, sums) in sums.iter().enumerate() {
        for (b, v) in sums.iter().enumerate().take(channels) {
            let d = &mut ops.dst[((o0 + b) * ho + y + r) * wo + x0..][..n];
            match <&mut [MaybeUninit<f32>; LANES]>::try_from(&mut *d) {
                Ok(d) => *d = v.map(MaybeUninit::new),
                Err(_) => d.iter_mut().zip(v).for_each(|(d, v)| _ = d.write(*v)),
            }
        }
    }
}

//! The weight gradient: `dyᵀ x grid` for each kernel row, summed over fixed
//! groups of grid rows and then the groups in order, so the same shape
//! gives the same bits whatever the thread count or scheduling.

use rayon::prelude::*;

use super::{product, weight_elements, Geometry, InputGrid, Out, OutputGrad, View, CHUNK};
use crate::outer;

/// The most chunks summed into one partial weight gradient.
const GROUP: usize = 4;

/// Partial weight gradients wanted at least, where there are rows for them:
/// with one partial per 4 chunks, ResNet-20's 7x7 layers (8,192 grid rows
/// at batch 128) had one partial, so one core computed their weight gradient.
const PARTIALS: usize = 8;

/// Chunks per partial weight gradient for `rows` grid rows: from the shape
/// alone, so the sums' order (and bits) is the same on any thread count.
fn group_chunks(rows: usize) -> usize {
    (rows / (CHUNK * PARTIALS)).clamp(1, GROUP)
}

/// How one kernel row's `C_out x Kw*C_in` block of sums is computed and
/// laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sums {
    /// [`outer::sums`]: the output channels fill whole AVX-512 registers and
    /// the columns do not; its output has the channels along the rows.
    Outer,
    /// gemm, its output with the channels along the microkernel's rows
    /// (`o` contiguous) or along its columns, as [`outer::channels_in_rows`]
    /// says: a matter of speed, the same sums in the same order.
    Gemm { channels_in_rows: bool },
}

impl Sums {
    /// This CPU's choice for `c_out` channels and `columns` columns.
    fn chosen(c_out: usize, columns: usize) -> Self {
        match outer::applies(c_out, columns) {
            true => Sums::Outer,
            false => Sums::Gemm {
                channels_in_rows: outer::channels_in_rows(c_out, columns),
            },
        }
    }

    /// Where `(o, j)` lies in a `co x kc` block: `o * steps[0] + j * steps[1]`.
    fn steps(self, co: usize, kc: usize) -> [usize; 2] {
        match self {
            Sums::Outer
            | Sums::Gemm {
                channels_in_rows: true,
            } => [1, co],
            Sums::Gemm {
                channels_in_rows: false,
            } => [kc, 1],
        }
    }
}

/// The weight gradient `[C_out, C_in, Kh, Kw]` from the input grid and the
/// output gradient: `dyᵀ x grid` for each kernel row, over groups of rows
/// summed in a fixed order.
pub fn weight_grad(x: &InputGrid, dy: &OutputGrad, g: &Geometry) -> Vec<f32> {
    weight_grad_by(x, dy, g, Sums::chosen(g.c_out, g.kernel[1] * g.c_in))
}

/// [`weight_grad`] with its blocks' sums computed as `sums` says.
fn weight_grad_by(x: &InputGrid, dy: &OutputGrad, g: &Geometry, sums: Sums) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let (ci, co, rows) = (g.c_in, g.c_out, g.rows());
    let kc = kw * ci;
    // Partial sums over fixed groups of chunks, added in order.
    let group = group_chunks(rows) * CHUNK;
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(group))
        .into_par_iter()
        .map(|gi| partial(x, dy, g, sums, gi * group..rows.min((gi + 1) * group)))
        .collect();
    let mut sum = vec![0f32; kh * co * kc];
    for p in &partials {
        sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    // (o, j) of kernel row t is at sum[t * co * kc + o * o_step + j * j_step].
    let [o_step, j_step] = sums.steps(co, kc);
    let mut out = vec![0f32; co * ci * kh * kw];
    weight_elements(g, |idx, (o, i, y, x)| {
        out[idx] = sum[y * co * kc + o * o_step + (x * ci + i) * j_step]
    });
    out
}

/// One group's sums over grid rows `span`, chunk by chunk in order: `kh`
/// blocks of `co x kc`, laid out as `sums` says.
fn partial(
    x: &InputGrid,
    dy: &OutputGrad,
    g: &Geometry,
    sums: Sums,
    span: std::ops::Range<usize>,
) -> Vec<f32> {
    let (ci, co, kh, wp) = (g.c_in, g.c_out, g.kernel[0], g.grid_hw()[1]);
    let kc = g.kernel[1] * ci;
    let (xg, yg) = (&x.0, dy.rows(g));
    // Grids of another geometry would be read past their ends.
    assert!(
        span.end * co <= yg.len() && (span.end + g.reach()) * ci <= xg.len(),
        "rows inside the grids"
    );
    let [o_step, j_step] = sums.steps(co, kc);
    let mut acc = vec![0f32; kh * co * kc];
    let mut r0 = span.start;
    while r0 < span.end {
        let m = CHUNK.min(span.end - r0);
        for t in 0..kh {
            // SAFETY: dy grid rows r0 .. r0 + m and input grid rows up to
            // r0 + m - 1 + reach, inside both (asserted above); acc holds kh
            // blocks of co x kc.
            unsafe {
                let dst = acc.as_mut_ptr().add(t * co * kc);
                let (d, xs) = (
                    yg.as_ptr().add(r0 * co),
                    xg.as_ptr().add((r0 + t * wp) * ci),
                );
                match sums {
                    #[cfg(target_arch = "x86_64")]
                    Sums::Outer => outer::sums([m, co, ci, kc], d, xs, dst),
                    _ => product(
                        [co, kc, m],
                        Out(dst, o_step, j_step, true),
                        View(d, 1, co),
                        View(xs, ci, 1),
                    ),
                }
            }
        }
        r0 += m;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_gradients_split_into_enough_partials_for_every_core() {
        // 7x7 images at batch 128: 8,192 grid rows, four partials of one chunk.
        assert_eq!(group_chunks(8192), 1);
        assert_eq!(8192_usize.div_ceil(group_chunks(8192) * CHUNK), 4);
        // 28x28 at batch 128: 29 x 29 x 128 rows, capped at GROUP chunks.
        assert_eq!(group_chunks(29 * 29 * 128), GROUP);
        assert_eq!(group_chunks(100), 1);
    }

    /// An input grid built for a smaller batch is refused, not read past its
    /// end (`weight_grad` is public and takes the geometry separately).
    #[test]
    #[should_panic(expected = "rows inside the grids")]
    fn a_grid_of_another_geometry_is_refused() {
        let g = |batch| Geometry::of([batch, 4, 6, 6], [8, 4, 3, 3], [1, 1]).expect("a geometry");
        let (small, large) = (g(1), g(3));
        let x = InputGrid::new(&vec![0.5; 4 * 36], &small);
        let dy = OutputGrad::new(&vec![0.25; 3 * 8 * 36], &large);
        weight_grad(&x, &dy, &large);
    }

    /// `dw[o, i, y, x] = sum dy[n, o, p, q] * x[n, i, p + y - pad, q + x - pad]`
    /// in f64, straight from the definition.
    fn reference(x: &[f32], dy: &[f32], g: &Geometry) -> Vec<f64> {
        let ([ho, wo], [kh, kw], [ph, pw]) = (g.out(), g.kernel, g.padding);
        let (h, w) = (g.height as isize, g.width as isize);
        let mut dw = vec![0f64; g.c_out * g.c_in * kh * kw];
        weight_elements(g, |idx, (o, i, y, xk)| {
            for n in 0..g.batch {
                for p in 0..ho {
                    for q in 0..wo {
                        let (r, s) = (
                            (p + y) as isize - ph as isize,
                            (q + xk) as isize - pw as isize,
                        );
                        if (0..h).contains(&r) && (0..w).contains(&s) {
                            let xv = x
                                [((n * g.c_in + i) * g.height + r as usize) * g.width + s as usize];
                            let dv = dy[((n * g.c_out + o) * ho + p) * wo + q];
                            dw[idx] += xv as f64 * dv as f64;
                        }
                    }
                }
            }
        });
        dw
    }

    /// gemm's two output layouts give the same bits (the layout rule reads
    /// the CPU, so both are forced here), and both the definition's values;
    /// where this CPU sums outer products, those too. Shapes: ResNet-20's
    /// channel counts (both rules' sides of 16 and 64), a ragged 6 -> 10 and
    /// more rows than one group (several partials).
    #[test]
    fn either_output_layout_gives_the_same_bits_and_the_definitions_values() {
        let value = |i: usize, m: usize| ((i * 7919) % m) as f32 / m as f32 - 0.5;
        for (batch, c, n, hw, kernel, padding) in [
            (3, 16, 16, 9, [3, 3], [1, 1]),
            (2, 32, 64, 7, [3, 3], [1, 1]),
            (5, 6, 10, 12, [5, 5], [2, 2]),
            (40, 16, 32, 11, [3, 3], [1, 1]),
        ] {
            let g = Geometry::of([batch, c, hw, hw], [n, c, kernel[0], kernel[1]], padding)
                .expect("a geometry");
            let [ho, wo] = g.out();
            let x: Vec<f32> = (0..batch * c * hw * hw).map(|i| value(i, 997)).collect();
            let dy: Vec<f32> = (0..batch * n * ho * wo).map(|i| value(i, 61)).collect();
            let (grid, dyg) = (InputGrid::new(&x, &g), OutputGrad::new(&dy, &g));
            let by = |sums| weight_grad_by(&grid, &dyg, &g, sums);
            let rows = by(Sums::Gemm {
                channels_in_rows: true,
            });
            let columns = by(Sums::Gemm {
                channels_in_rows: false,
            });
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&rows), bits(&columns), "{c}->{n} {kernel:?}");
            let want = reference(&x, &dy, &g);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let mut computed = vec![rows];
            if outer::applies(n, kernel[1] * c) {
                computed.push(by(Sums::Outer));
            }
            for got in &computed {
                for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                    let diff = (*a as f64 - b).abs() / scale;
                    assert!(diff < 1e-5, "{c}->{n} {kernel:?} element {k}: {a} vs {b}");
                }
            }
        }
    }
}

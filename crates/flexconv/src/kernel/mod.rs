//! The arithmetic on plain slices, no Burn types.
//!
//! A stride-1 convolution over a zero-padded image laid out channels-last
//! ("the grid", `[N, Hg, Wg, C]` flattened to rows of C) is a sum of K
//! matrix products: for kernel row `kh`, output row `r` reads grid rows
//! `r + kh*Wg .. r + kh*Wg + Kw`, which are contiguous, so the product's
//! left operand is the grid itself, offset and read with a row stride of C.
//! No im2col is built: the only copies are the grids (about the size of the
//! input). Rows whose window runs past an image edge compute values that
//! are thrown away (the output is read back from the grid's top-left
//! corner), about (Hg*Wg)/(Ho*Wo) - 1 of the work. Neighbouring rows and
//! images share their zero padding (a row's right padding is the next
//! row's left, an image's bottom the next one's top), so `Wg = W + P`
//! rather than `W + 2P`: a 7x7 image with padding 1 computes 64 rows for
//! its 49 outputs, not 81.

use gemm::{gemm, Parallelism};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::layout::{self, Place};

mod tiles;
mod wgrad;
pub use wgrad::weight_grad;

/// Rows of the grid per task: small enough that a task's slice of the
/// grid and its output stay in a core's L2 cache across the K products.
const CHUNK: usize = 2048;

/// A matrix in a buffer: its first element, row stride and column stride.
#[derive(Clone, Copy)]
struct View(*const f32, usize, usize);

/// A matrix to write: its first element, row stride, column stride and
/// whether the product adds to what is there.
#[derive(Clone, Copy)]
struct Out(*mut f32, usize, usize, bool);

/// `dst = (dst if accumulate) + lhs x rhs` for an `m x k` by `k x n` product,
/// on the calling thread (the callers split rows across threads).
///
/// # Safety
/// Every element the sizes and strides address must lie in its buffer.
#[rustfmt::skip]
unsafe fn product([m, n, k]: [usize; 3], Out(d, d_row, d_col, accumulate): Out, lhs: View, rhs: View) {
    gemm(
        m, n, k,
        d, d_col as isize, d_row as isize, accumulate,
        lhs.0, lhs.2 as isize, lhs.1 as isize,
        rhs.0, rhs.2 as isize, rhs.1 as isize,
        1.0, 1.0, false, false, false, Parallelism::None,
    );
}

/// The shape of one stride-1, dilation-1, single-group 2D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    /// Zero padding on each side, rows then columns.
    pub padding: [usize; 2],
}

impl Geometry {
    /// The shape of `x` `[N, C_in, H, W]` convolved with `weight`
    /// `[C_out, C_in, Kh, Kw]` under `padding` on each side, where the
    /// kernels compute it: matching channels, a kernel inside the padded
    /// image, and something to compute (no dimension 0).
    pub fn of(x: [usize; 4], weight: [usize; 4], padding: [usize; 2]) -> Option<Self> {
        let ([batch, c_in, height, width], [c_out, c_w, kh, kw]) = (x, weight);
        let fits = kh <= height + 2 * padding[0] && kw <= width + 2 * padding[1];
        // Empty inputs go to Burn: a zero-sized image has no rows to chunk.
        let some = [batch, c_in, height, width, c_out, kh, kw]
            .iter()
            .all(|d| *d > 0);
        (c_in == c_w && fits && some).then_some(Geometry {
            batch,
            c_in,
            c_out,
            height,
            width,
            kernel: [kh, kw],
            padding,
        })
    }
    pub(crate) fn hp(&self) -> usize {
        self.height + 2 * self.padding[0]
    }
    pub(crate) fn wp(&self) -> usize {
        self.width + 2 * self.padding[1]
    }
    /// Whether the forward's products are too shallow (Kw x C_in terms
    /// each) for gemm to beat Flex's own forward: LeNet-5's first layer (5)
    /// measured 1.2-1.4x slower here, its second (30) 2.1-2.4x faster.
    /// Such a forward is the `direct` module's (or Flex's).
    pub fn shallow(&self) -> bool {
        self.kernel[1] * self.c_in < 8
    }
    /// Output height and width.
    pub fn out(&self) -> [usize; 2] {
        [
            self.hp() + 1 - self.kernel[0],
            self.wp() + 1 - self.kernel[1],
        ]
    }
    /// The grid's rows and columns per image: the image and one side's
    /// padding, the other side's being the neighbour's; both sides where the
    /// output would be larger than that (a kernel no wider than the padding).
    fn grid_hw(&self) -> [usize; 2] {
        let gap = |k: usize, p: usize| if k > p { p } else { 2 * p };
        [
            self.height + gap(self.kernel[0], self.padding[0]),
            self.width + gap(self.kernel[1], self.padding[1]),
        ]
    }
    fn image_rows(&self) -> usize {
        let [hg, wg] = self.grid_hw();
        hg * wg
    }
    fn rows(&self) -> usize {
        self.batch * self.image_rows()
    }
    /// How far past a row the last kernel tap reads.
    fn reach(&self) -> usize {
        (self.kernel[0] - 1) * self.grid_hw()[1] + self.kernel[1] - 1
    }
}

/// `[N, C, h, w]` into a zeroed `[N, Hg, Wg, C]` grid at offset `at`,
/// with `front` and `tail` zero rows around it. Only what the images do not
/// cover is zeroed (zeroing the whole grid first was a memset the size of
/// every grid, about 5% of a ResNet-20 step).
fn grid(
    x: &[f32],
    g: &Geometry,
    c: usize,
    hw: [usize; 2],
    at: [usize; 2],
    front: usize,
    tail: usize,
) -> Vec<f32> {
    let (place, image) = (place(g, hw, at), g.image_rows() * c);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        let (head, rest) = out.split_at_mut(front * c);
        let (body, end) = rest.split_at_mut(g.batch * image);
        zero(head);
        zero(end);
        body.par_chunks_mut(image)
            .zip(x.par_chunks(c * hw[0] * hw[1]))
            .for_each(|(dst, src)| {
                zero_around(dst, c, hw, place);
                layout::to_rows(src, dst, c, place);
            });
    };
    // SAFETY: the front and tail rows, and each image's block around its
    // image are zeroed; to_rows writes the image.
    unsafe { unzeroed((front + g.rows() + tail) * c, fill) }
}

/// Writes zeros over `v`.
fn zero(v: &mut [MaybeUninit<f32>]) {
    v.iter_mut().for_each(|v| {
        v.write(0.0);
    });
}

/// Zeroes one image's grid block (`c` values a row) but for the `hw`
/// pixels' rows `place` gives: the runs between one image row's last pixel
/// and the next one's first.
fn zero_around(block: &mut [MaybeUninit<f32>], c: usize, [h, w]: [usize; 2], place: Place) {
    let start = |y: usize| ((y + place.at[0]) * place.wp + place.at[1]) * c;
    let mut from = 0;
    for y in 0..h {
        zero(&mut block[from..start(y)]);
        from = start(y) + w * c;
    }
    zero(&mut block[from..]);
}

/// `len` values that `fill` writes, not zeroed first: the products' and
/// transposes' outputs, a memset the size of a grid each otherwise.
///
/// # Safety
/// `fill` writes every value of the slice it is given.
pub(crate) unsafe fn unzeroed(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: fill wrote all len values (this function's contract).
    unsafe { v.set_len(len) };
    v
}

/// Values known to be written, as values.
///
/// # Safety
/// Every value of `v` has been written.
unsafe fn written(v: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: same layout; initialised (this function's contract).
    unsafe { &*(v as *const [MaybeUninit<f32>] as *const [f32]) }
}

/// `v` zeroed, as values: a task zeroes its own part of an [`unzeroed`]
/// buffer, in parallel and just before it writes there.
pub(crate) fn zeroed(v: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    v.fill(MaybeUninit::new(0.0));
    // SAFETY: same layout; every value was just written.
    unsafe { &mut *(v as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Where an `h x w` block at offset `at` lies in each image of the grid.
fn place(g: &Geometry, [_, w]: [usize; 2], at: [usize; 2]) -> Place {
    Place {
        w,
        wp: g.grid_hw()[1],
        at,
    }
}

/// A correlation's operands: the grid (`c` channels), the taps
/// (`kw x c` rows of `kh x n`: row `x * c + i`, column `y * n + j`) and the
/// shape.
#[derive(Clone, Copy)]
struct Operands<'a> {
    grid: &'a [f32],
    taps: &'a [f32],
    g: &'a Geometry,
    c: usize,
    n: usize,
}

/// The most bytes of one block's [`Operands::stacked`] products: the block
/// and its sums stay in a core's L2 cache.
const STACK_BYTES: usize = 512 << 10;

thread_local! {
    /// A thread's stacked products, reused (fresh pages each block otherwise).
    static STACKED: std::cell::RefCell<Vec<MaybeUninit<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Operands<'_> {
    /// `out[r, j] = sum_kh sum_(kw, i) grid[r0 + r + kh*Wg + kw, i] * taps[kw, i][kh, j]`
    /// for the `out.len() / n` rows from grid row `r0`.
    fn rows(&self, r0: usize, out: &mut [MaybeUninit<f32>]) {
        let g = self.g;
        // Fewer than 64 output channels fill part of gemm's widest tile
        // (64 x 6, AVX-512): with every kernel row's channels in one product
        // its columns are kh times as many.
        match self.n < 64 && g.kernel[0] > 1 {
            true => self.stacked(r0, out),
            false => self.per_kernel_row(r0, out),
        }
    }

    /// Kernel rows, grid row width and product depth (`kw x c`), and the
    /// operands, once asserted that the grid holds every row `out`'s
    /// products read from `r0` on: the products' pointer arithmetic relies
    /// on it.
    fn sizes(&self, r0: usize, out: &[MaybeUninit<f32>]) -> ([usize; 3], Self) {
        let (g, c) = (self.g, self.c);
        assert!(
            (r0 + out.len() / self.n + g.reach()) * c <= self.grid.len(),
            "rows inside the grid"
        );
        ([g.kernel[0], g.grid_hw()[1], g.kernel[1] * c], *self)
    }

    /// [`Self::rows`] as one product per kernel row, accumulated in the
    /// output, in chunks of at most [`CHUNK`] rows (each one's output stays
    /// in cache across the products).
    fn per_kernel_row(&self, r0: usize, out: &mut [MaybeUninit<f32>]) {
        let (
            [kh, wp, kc],
            Operands {
                grid, taps, c, n, ..
            },
        ) = self.sizes(r0, out);
        for (k, dst) in out.chunks_mut(CHUNK * n).enumerate() {
            let (r, m) = (r0 + k * CHUNK, dst.len() / n);
            for t in 0..kh {
                // SAFETY: rows r .. r + m of the output; the grid is read up
                // to row r + m - 1 + reach, inside it (asserted above); the
                // taps hold kc rows of kh x n.
                unsafe {
                    product(
                        [m, n, kc],
                        Out(dst.as_mut_ptr().cast(), n, 1, t > 0),
                        View(grid.as_ptr().add((r + t * wp) * c), c, 1),
                        View(taps.as_ptr().add(t * n), kh * n, 1),
                    );
                }
            }
        }
    }

    /// [`Self::rows`] as one product with every kernel row's taps side by
    /// side (`kh x n` columns), then each output row the sum of kernel row
    /// t's columns `t * Wg` rows further on, in kernel-row order: the sums
    /// [`Self::per_kernel_row`] makes, with the same bits.
    fn stacked(&self, r0: usize, out: &mut [MaybeUninit<f32>]) {
        let (
            [kh, wp, kc],
            Operands {
                grid, taps, n, c, ..
            },
        ) = self.sizes(r0, out);
        let nk = kh * n;
        let lag = (kh - 1) * wp;
        // Each block recomputes the `lag` rows past it: blocks as large as
        // the cache allows, and at least four times the lag.
        let block = (STACK_BYTES / (4 * nk)).saturating_sub(lag).max(4 * lag);
        STACKED.with_borrow_mut(|p| {
            for (k, dst) in out.chunks_mut(block * n).enumerate() {
                let (r, m) = (r0 + k * block, dst.len() / n);
                let len = (m + lag) * nk;
                if p.len() < len {
                    p.resize(len, MaybeUninit::uninit());
                }
                // SAFETY: grid rows r .. r + m + lag - 1 + kw - 1, that is up
                // to r + m - 1 + reach, inside it (asserted above); p holds
                // m + lag rows of nk.
                unsafe {
                    product(
                        [m + lag, nk, kc],
                        Out(p.as_mut_ptr().cast(), nk, 1, false),
                        View(grid.as_ptr().add(r * c), c, 1),
                        View(taps.as_ptr(), nk, 1),
                    );
                }
                // SAFETY: the product wrote all of p[..len] (not accumulating).
                shifted_sum(unsafe { written(&p[..len]) }, dst, [n, kh, wp]);
            }
        })
    }
}

/// `dst[i, j] = sum_t p[i + t * wp, t * n + j]`, summed in order of t.
fn shifted_sum(p: &[f32], dst: &mut [MaybeUninit<f32>], [n, kh, wp]: [usize; 3]) {
    // The common widths as constants: each row's sums become a few register
    // adds instead of a loop per row (LeNet-5's 6 channels: 7% of a step).
    match n {
        6 => sums(p, dst, [6, kh, wp]),
        16 => sums(p, dst, [16, kh, wp]),
        32 => sums(p, dst, [32, kh, wp]),
        _ => sums(p, dst, [n, kh, wp]),
    }
}

/// [`shifted_sum`]'s loop, inlined where `n` is a constant.
#[inline(always)]
fn sums(p: &[f32], dst: &mut [MaybeUninit<f32>], [n, kh, wp]: [usize; 3]) {
    let nk = n * kh;
    for (i, d) in dst.chunks_exact_mut(n).enumerate() {
        for (d, v) in d.iter_mut().zip(&p[i * nk..][..n]) {
            d.write(*v);
        }
        // SAFETY: every value was just written.
        let d = unsafe { &mut *(d as *mut [MaybeUninit<f32>] as *mut [f32]) };
        for t in 1..kh {
            for (d, v) in d.iter_mut().zip(&p[(i + t * wp) * nk + t * n..][..n]) {
                *d += v;
            }
        }
    }
}

/// `out[r, j] = sum_kh sum_(kw, i) grid[r + kh*Wg + kw, i] * taps[kw, i][kh, j]`
/// for every grid row r: a correlation with `c` input and `n` output channels.
fn correlate(grid: &[f32], taps: &[f32], g: &Geometry, c: usize, n: usize) -> Vec<f32> {
    let ops = Operands {
        grid,
        taps,
        g,
        c,
        n,
    };
    // SAFETY: rows writes every value of its output (a first product that
    // does not accumulate, or the shifted sums).
    unsafe {
        unzeroed(g.rows() * n, |out| {
            out.par_chunks_mut(CHUNK * n)
                .enumerate()
                .for_each(|(i, dst)| ops.rows(i * CHUNK, dst))
        })
    }
}

thread_local! {
    /// A thread's correlation rows on their way to planes, reused (a fresh
    /// buffer of this size would be fresh pages each time).
    static SCRATCH: std::cell::RefCell<Vec<MaybeUninit<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`correlate`]'s output block `hw` at `at` of each image, as planes
/// `[N, n, h, w]`: whole images per task, each one's rows moved to planes
/// while they are in cache rather than written out as a grid and read back.
fn correlate_planes(
    grid: &[f32],
    taps: &[f32],
    g: &Geometry,
    cn: [usize; 2],
    hw: [usize; 2],
    at: [usize; 2],
) -> Vec<f32> {
    correlate_planes_by(grid, taps, g, cn, hw, at, tiles::applies(cn[1]))
}

/// [`correlate_planes`] with the pixels' sums in [`tiles`] or in gemm's
/// products over every grid row: the same bits.
fn correlate_planes_by(
    grid: &[f32],
    taps: &[f32],
    g: &Geometry,
    [c, n]: [usize; 2],
    hw: [usize; 2],
    at: [usize; 2],
    tiled: bool,
) -> Vec<f32> {
    let ops = Operands {
        grid,
        taps,
        g,
        c,
        n,
    };
    let (image, plane, place) = (g.image_rows(), n * hw[0] * hw[1], place(g, hw, at));
    let images = (CHUNK / image).max(1);
    let packed = tiled.then(|| tiles::Packed::new(&ops));
    // The tiles' rows are the pixels alone, one after another.
    let compact = Place {
        w: hw[1],
        wp: hw[1],
        at: [0, 0],
    };
    let task = |(i, dst): (usize, &mut [MaybeUninit<f32>])| {
        SCRATCH.with_borrow_mut(|rows| {
            let k = dst.len() / plane;
            let len = match packed {
                Some(_) => plane,
                None => k * image * n,
            };
            if rows.len() < len {
                rows.resize(len, MaybeUninit::uninit());
            }
            let rows = &mut rows[..len];
            let Some(packed) = &packed else {
                ops.rows(i * images * image, rows);
                // SAFETY: rows wrote every value (as in correlate).
                let rows = unsafe { written(rows) };
                for (src, out) in rows.chunks(image * n).zip(dst.chunks_mut(plane)) {
                    layout::to_planes(src, out, n, place);
                }
                return;
            };
            for (j, out) in dst.chunks_mut(plane).enumerate() {
                ops.pixels(packed, (i * images + j) * image, place, rows);
                // SAFETY: pixels wrote every row of the plane's pixels.
                layout::to_planes(unsafe { written(rows) }, out, n, compact);
            }
        })
    };
    // SAFETY: to_planes writes every value of each image's planes.
    unsafe {
        unzeroed(g.batch * plane, |out| {
            out.par_chunks_mut(images * plane)
                .enumerate()
                .for_each(task)
        })
    }
}

/// The output gradient `[N, C_out, Ho, Wo]` as a grid, built once for both
/// gradients: `reach` zero rows in front (the input gradient's row q reads
/// rows q - reach ..= q), then the grid the weight gradient reads.
pub struct OutputGrad(Vec<f32>);

impl OutputGrad {
    pub fn new(dy: &[f32], g: &Geometry) -> Self {
        Self::within(dy, g, g.out())
    }

    /// From an output gradient `hw` in size, at most `g.out()`: zero beyond
    /// (a strided convolution's output is its phase stack's, cut).
    pub fn within(dy: &[f32], g: &Geometry, hw: [usize; 2]) -> Self {
        OutputGrad(grid(dy, g, g.c_out, hw, [0, 0], g.reach(), 0))
    }

    /// The grid without the front rows.
    fn rows(&self, g: &Geometry) -> &[f32] {
        &self.0[g.reach() * g.c_out..]
    }
}

/// Calls `f(idx, (o, i, y, x))` for every element `idx` of a
/// `[C_out, C_in, Kh, Kw]` weight, in order: nested loops, where four
/// divisions an element of the index were 3% of a ResNet-20 step (serial,
/// on the thread driving the graph, three times per convolution).
pub(crate) fn weight_elements(
    g: &Geometry,
    mut f: impl FnMut(usize, (usize, usize, usize, usize)),
) {
    let [kh, kw] = g.kernel;
    let mut idx = 0;
    for o in 0..g.c_out {
        for i in 0..g.c_in {
            for y in 0..kh {
                for x in 0..kw {
                    f(idx, (o, i, y, x));
                    idx += 1;
                }
            }
        }
    }
}

/// The weight `[C_out, C_in, Kh, Kw]` rearranged as [`correlate`]'s taps:
/// `at(o, i, y, x)` is where element `(o, i, y, x)` goes.
fn taps(
    weight: &[f32],
    g: &Geometry,
    at: impl Fn(usize, usize, usize, usize) -> usize,
) -> Vec<f32> {
    assert_eq!(weight.len(), g.c_out * g.c_in * g.kernel[0] * g.kernel[1]);
    let mut taps = vec![0f32; weight.len()];
    weight_elements(g, |idx, (o, i, y, x)| taps[at(o, i, y, x)] = weight[idx]);
    taps
}

/// The zero-padded input as a grid, built once for the forward and kept
/// for the weight gradient.
pub struct InputGrid(Vec<f32>);

impl InputGrid {
    pub fn new(x: &[f32], g: &Geometry) -> Self {
        InputGrid(grid(
            x,
            g,
            g.c_in,
            [g.height, g.width],
            g.padding,
            0,
            g.reach(),
        ))
    }
}

impl InputGrid {
    /// The grid of an unpadded geometry with `fill(n, rows)` writing image
    /// n's rows (zeroed first): pixel `(y, x)` is row `y * width + x`,
    /// `c_in` values.
    pub(crate) fn of_pixels(g: &Geometry, fill: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        assert_eq!(g.padding, [0, 0], "rows of pixels, no padding");
        let image = g.image_rows() * g.c_in;
        // Zeroed image by image on the pool (one memset of the whole grid
        // on the calling thread was 0.7% of a ResNet-20 step's wall time).
        let fill = |out: &mut [MaybeUninit<f32>]| {
            let (body, tail) = out.split_at_mut(g.batch * image);
            zero(tail);
            body.par_chunks_mut(image)
                .enumerate()
                .for_each(|(n, rows)| {
                    zero(rows);
                    // SAFETY: just zeroed.
                    let rows = unsafe { &mut *(rows as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    fill(n, rows)
                });
        };
        // SAFETY: the images and the tail rows are zeroed.
        InputGrid(unsafe { unzeroed((g.rows() + g.reach()) * g.c_in, fill) })
    }
}

impl std::fmt::Debug for InputGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InputGrid({} values)", self.0.len())
    }
}

/// The output `[N, C_out, Ho, Wo]` (no bias) of the input grid and the
/// weight `[C_out, C_in, Kh, Kw]`: a correlation of the padded input.
pub fn forward(x: &InputGrid, weight: &[f32], g: &Geometry) -> Vec<f32> {
    forward_within(x, weight, g, g.out())
}

/// [`forward`]'s output cut to its top-left `hw` (at most `g.out()`).
pub fn forward_within(x: &InputGrid, weight: &[f32], g: &Geometry, hw: [usize; 2]) -> Vec<f32> {
    let (ci, co, kh) = (g.c_in, g.c_out, g.kernel[0]);
    let taps = taps(weight, g, |o, i, y, x| (x * ci + i) * kh * co + y * co + o);
    correlate_planes(&x.0, &taps, g, [ci, co], hw, [0, 0])
}

/// The input gradient `[N, C_in, H, W]` from the output gradient and the
/// weight `[C_out, C_in, Kh, Kw]`: a correlation of the zero-surrounded
/// output gradient with the flipped, transposed kernel.
pub fn input_grad(dy: &OutputGrad, weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (hw, taps) = ([g.height, g.width], flipped(weight, g));
    correlate_planes(&dy.0, &taps, g, [g.c_out, g.c_in], hw, g.padding)
}

/// [`input_grad`] as grid rows, `c_in` values each: for an unpadded
/// geometry image n's pixel `(y, x)` is row `n * height * width + y * width + x`.
pub(crate) fn input_grad_rows(dy: &OutputGrad, weight: &[f32], g: &Geometry) -> Vec<f32> {
    correlate(&dy.0, &flipped(weight, g), g, g.c_out, g.c_in)
}

/// The input gradient's taps: the kernel flipped, its channels swapped.
fn flipped(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let [kh, kw] = g.kernel;
    let (ci, co) = (g.c_in, g.c_out);
    taps(weight, g, |o, i, y, x| {
        ((kw - 1 - x) * co + o) * kh * ci + (kh - 1 - y) * ci + i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stacked product and the per-kernel-row products give the same
    /// bits: rows chooses between them by the channel count alone. Blocks
    /// smaller than the rows asked for (the 64-wide 3x5 layer) and a
    /// kernel row past a block's end are among the shapes.
    #[test]
    fn stacked_taps_give_the_per_kernel_row_bits() {
        let value = |i: usize, m: usize| ((i * 7919) % m) as f32 / m as f32 - 0.5;
        for (c, n, hw, kernel, padding) in [
            (16, 6, 10, [5, 5], [4, 4]),
            (6, 16, 14, [5, 5], [0, 0]),
            (16, 48, 28, [3, 5], [1, 2]),
            (3, 7, 9, [2, 1], [1, 0]),
        ] {
            let g = Geometry::of([3, c, hw, hw], [n, c, kernel[0], kernel[1]], padding)
                .expect("a geometry");
            let x: Vec<f32> = (0..3 * c * hw * hw).map(|i| value(i, 997)).collect();
            let taps: Vec<f32> = (0..n * c * kernel[0] * kernel[1])
                .map(|i| value(i, 61))
                .collect();
            let grid = InputGrid::new(&x, &g);
            let ops = Operands {
                grid: &grid.0,
                taps: &taps,
                g: &g,
                c,
                n,
            };
            let run = |stacked: bool| {
                let mut out = vec![MaybeUninit::new(f32::NAN); g.rows() * n];
                match stacked {
                    true => ops.stacked(0, &mut out),
                    false => ops.per_kernel_row(0, &mut out),
                }
                out.iter()
                    .map(|v| unsafe { v.assume_init() }.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(true), run(false), "{c}->{n} {kernel:?}");
        }
    }
}

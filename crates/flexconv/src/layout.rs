//! Images between Burn's planes (`[C, H, W]`, a channel's pixels in a row)
//! and the kernels' grid rows (a pixel's channels in a row): a transpose.
//! Element by element the moves took a fifth of a ResNet-20 run on the CPU
//! (perf, training and evaluation); in 8 x 8 blocks in AVX2 registers each
//! block is a few shuffles. Pure data movement: every path gives the same
//! values.

use std::mem::MaybeUninit;

/// Initialised values seen as values to overwrite, for [`to_rows`]
/// (which writes only values).
pub(crate) fn writable(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the callers write only initialised f32s.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Where an image's pixels lie among a grid's rows: pixel `(y, x)` of a
/// `w`-wide image is row `(y + at[0]) * wp + x + at[1]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    pub w: usize,
    pub wp: usize,
    pub at: [usize; 2],
}

impl Place {
    /// A walk over the grid rows of pixels `p, p + 1, ...`.
    #[inline(always)]
    fn walk(&self, p: usize) -> Walk {
        Walk {
            place: *self,
            y: p / self.w,
            x: p % self.w,
        }
    }

    /// The grid rows of pixels `p .. p + N`.
    #[inline(always)]
    fn rows<const N: usize>(&self, p: usize) -> [usize; N] {
        let (mut walk, mut rows) = (self.walk(p), [0; N]);
        for row in &mut rows {
            *row = walk.step();
        }
        rows
    }

    /// The grid values an image of `hw` pixels and `c` channels reaches.
    fn reach(&self, hw: usize, c: usize) -> usize {
        match hw {
            0 => 0,
            _ => (self.rows::<1>(hw - 1)[0] + 1) * c,
        }
    }
}

/// Pixels' grid rows one after another: one division to start, then steps.
struct Walk {
    place: Place,
    y: usize,
    x: usize,
}

impl Walk {
    /// This pixel's grid row; moves to the next pixel.
    #[inline(always)]
    fn step(&mut self) -> usize {
        let p = &self.place;
        let row = (self.y + p.at[0]) * p.wp + self.x + p.at[1];
        self.x += 1;
        if self.x == p.w {
            (self.x, self.y) = (0, self.y + 1);
        }
        row
    }
}

/// Which way [`transpose`] moves values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// `grid[row(p) * c + ch] = planes[ch * hw + p]`.
    ToRows,
    /// `planes[ch * hw + p] = grid[row(p) * c + ch]`.
    ToPlanes,
}

/// The image (`c` rows of `hw` pixels in `planes`) into the grid's rows
/// that `place` gives its pixels, `c` values each (the rest of the grid as
/// it was: written or not).
///
/// # Panics
/// If the grid is shorter than those rows.
pub(crate) fn to_rows(planes: &[f32], grid: &mut [MaybeUninit<f32>], c: usize, place: Place) {
    let hw = planes.len() / c.max(1);
    assert!(grid.len() >= place.reach(hw, c), "the grid holds the image");
    // SAFETY: the planes hold c * hw values, the grid the rows (just above).
    unsafe {
        transpose(
            Way::ToRows,
            planes.as_ptr(),
            grid.as_mut_ptr().cast(),
            [c, hw],
            place,
        )
    }
}

/// The inverse of [`to_rows`]: the image in the grid back into `planes`,
/// every value of which it writes.
///
/// # Panics
/// If the grid is shorter than the image's rows, or `planes` not `c` rows.
pub(crate) fn to_planes(grid: &[f32], planes: &mut [MaybeUninit<f32>], c: usize, place: Place) {
    assert!(c > 0 && planes.len().is_multiple_of(c), "c rows of pixels");
    let hw = planes.len() / c;
    assert!(grid.len() >= place.reach(hw, c), "the grid holds the image");
    // SAFETY: as in to_rows.
    unsafe {
        transpose(
            Way::ToPlanes,
            grid.as_ptr(),
            planes.as_mut_ptr().cast(),
            [c, hw],
            place,
        )
    }
}

/// Moves `c` channels of `hw` pixels from `src` to `dst` the `way` says.
///
/// # Safety
/// The planes' buffer holds `c * hw` values and the grid's the rows `place`
/// gives those pixels, `c` values each; the two do not overlap.
unsafe fn transpose(way: Way, src: *const f32, dst: *mut f32, [c, hw]: [usize; 2], place: Place) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the buffers as
        // this function's contract.
        return unsafe { avx2::blocks(way, src, dst, [c, hw], place) };
    }
    // SAFETY: the buffers as this function's contract.
    unsafe { tails(way, src, dst, [c, hw], [0, 0], place) }
}

/// Offsets in the source and destination of channel `ch` of the pixel in
/// grid row `row` (`p`-th of its image).
#[inline(always)]
fn offsets(way: Way, [c, hw]: [usize; 2], ch: usize, p: usize, row: usize) -> (usize, usize) {
    let (plane, cell) = (ch * hw + p, row * c + ch);
    match way {
        Way::ToRows => (plane, cell),
        Way::ToPlanes => (cell, plane),
    }
}

/// The element-by-element moves of channels `c8..` of pixels `..p8` and of
/// every channel of pixels `p8..`: what 8 x 8 blocks leave (everything where
/// `c8` and `p8` are 0).
///
/// # Safety
/// As [`transpose`].
unsafe fn tails(
    way: Way,
    src: *const f32,
    dst: *mut f32,
    [c, hw]: [usize; 2],
    [c8, p8]: [usize; 2],
    place: Place,
) {
    let mut walk = place.walk(0);
    for p in 0..hw {
        let row = walk.step();
        for ch in if p < p8 { c8 } else { 0 }..c {
            let (s, d) = offsets(way, [c, hw], ch, p, row);
            // SAFETY: channel ch < c of pixel p < hw (the caller's contract).
            unsafe { *dst.add(d) = *src.add(s) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{tails, Place, Way};

    /// 8 rows of 8 values as 8 columns. (No closures here or in
    /// [`moves`]: a closure does not take its function's target features,
    /// and the intrinsics in it become calls.)
    #[target_feature(enable = "avx2")]
    #[inline]
    fn t8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// [`super::transpose`] in 8 x 8 blocks (the last of a pixel block's
    /// channels masked), the pixels past the last multiple of 8 by [`tails`].
    ///
    /// # Safety
    /// The CPU has AVX2; the buffers as [`super::transpose`]'s contract.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks(
        way: Way,
        src: *const f32,
        dst: *mut f32,
        [c, hw]: [usize; 2],
        place: Place,
    ) {
        // SAFETY: as this function's contract.
        unsafe {
            match way {
                Way::ToRows => moves::<true>(src, dst, [c, hw], place),
                Way::ToPlanes => moves::<false>(src, dst, [c, hw], place),
            }
            tails(way, src, dst, [c, hw], [c, hw / 8 * 8], place)
        }
    }

    /// The 8 x 8 blocks one way, the direction a constant: with it decided
    /// per block, the addresses went through the stack (a fifth of a
    /// ResNet-20 step was these moves).
    ///
    /// # Safety
    /// As [`blocks`].
    #[target_feature(enable = "avx2")]
    unsafe fn moves<const TO_ROWS: bool>(
        src: *const f32,
        dst: *mut f32,
        [c, hw]: [usize; 2],
        place: Place,
    ) {
        let (c8, p8) = (c / 8 * 8, hw / 8 * 8);
        for p in (0..p8).step_by(8) {
            // Pixel i's first value in the grid, and in channel 0's plane.
            let mut cells = place.rows::<8>(p);
            for cell in &mut cells {
                *cell *= c;
            }
            for ch in (0..c8).step_by(8) {
                // Eight vectors along the planes' rows (channels ch + i) or
                // the grid's (pixels p + i); their transpose goes along the
                // other's.
                let plane = ch * hw + p;
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, r) in r.iter_mut().enumerate() {
                    let from = if TO_ROWS {
                        plane + i * hw
                    } else {
                        cells[i] + ch
                    };
                    // SAFETY: channels ch .. ch + 8 <= c of pixels p .. p + 8
                    // <= hw, inside both buffers (the caller's contract).
                    *r = unsafe { _mm256_loadu_ps(src.add(from)) };
                }
                for (i, v) in t8(r).into_iter().enumerate() {
                    let to = if TO_ROWS {
                        cells[i] + ch
                    } else {
                        plane + i * hw
                    };
                    // SAFETY: as the loads.
                    unsafe { _mm256_storeu_ps(dst.add(to), v) };
                }
            }
            if c8 < c {
                // SAFETY: as the blocks (the caller's contract).
                unsafe { last_channels::<TO_ROWS>(src, dst, [c, hw], p, &cells) };
            }
        }
    }

    /// The channels past the last multiple of 8 of pixels `p .. p + 8`
    /// (LeNet-5's 6 moved value by value were 3.7% of its step): the same
    /// block with the missing channels masked off the grid's side and
    /// skipped on the planes'.
    ///
    /// # Safety
    /// As [`blocks`]; `cells` are the pixels' first values in the grid.
    #[target_feature(enable = "avx2")]
    unsafe fn last_channels<const TO_ROWS: bool>(
        src: *const f32,
        dst: *mut f32,
        [c, hw]: [usize; 2],
        p: usize,
        cells: &[usize; 8],
    ) {
        let (c8, rem) = (c / 8 * 8, c % 8);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem as i32), lanes);
        let plane = c8 * hw + p;
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, r) in r.iter_mut().enumerate() {
            // SAFETY: channels c8 + i < c of pixels p .. p + 8 <= hw; on the
            // grid's side only the `rem` lanes of real channels are read.
            unsafe {
                if !TO_ROWS {
                    *r = _mm256_maskload_ps(src.add(cells[i] + c8), mask);
                } else if i < rem {
                    *r = _mm256_loadu_ps(src.add(plane + i * hw));
                }
            }
        }
        for (i, v) in t8(r).into_iter().enumerate() {
            // SAFETY: as the loads, writing only what they read.
            unsafe {
                if TO_ROWS {
                    _mm256_maskstore_ps(dst.add(cells[i] + c8), mask, v);
                } else if i < rem {
                    _mm256_storeu_ps(dst.add(plane + i * hw), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class (channels and pixels below, at and past multiples of
    /// 8, a padded offset) both ways, against plain index arithmetic.
    #[test]
    fn blocks_and_tails_move_every_value() {
        for (c, h, w) in [
            (1, 3, 3),
            (6, 14, 14),
            (8, 4, 2),
            (16, 7, 7),
            (19, 5, 9),
            (64, 2, 8),
        ] {
            let place = Place {
                w,
                wp: w + 3,
                at: [2, 1],
            };
            let planes: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 0.5).collect();
            let mut grid = vec![-1f32; (h + 3) * (w + 3) * c];
            to_rows(&planes, writable(&mut grid), c, place);
            let mut moved = 0;
            for (i, v) in grid.iter().enumerate() {
                let (row, ch) = (i / c, i % c);
                let (y, x) = (row / (w + 3), row % (w + 3));
                let inside = (2..h + 2).contains(&y) && (1..w + 1).contains(&x);
                let want = match inside {
                    true => ((ch * h + y - 2) * w + x - 1) as f32 + 0.5,
                    false => -1.0,
                };
                assert_eq!(*v, want, "c {c}, h {h}, w {w}, grid value {i}");
                moved += inside as usize;
            }
            assert_eq!(moved, c * h * w);
            let mut back = vec![MaybeUninit::new(-2f32); c * h * w];
            to_planes(&grid, &mut back, c, place);
            // SAFETY: every value was initialised (to -2, then moved over).
            let back: Vec<f32> = back.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(back, planes, "c {c}, h {h}, w {w}");
        }
    }
}

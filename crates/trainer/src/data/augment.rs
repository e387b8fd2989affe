//! The standard training augmentation of CIFAR-style image data: random
//! 32x32 crops after 4-pixel zero padding, and horizontal flips (He et al.
//! 2016, section 4.2; torchvision's `RandomCrop(32, padding=4)` and
//! `RandomHorizontalFlip()`).
//!
//! Each batch's crops and flips are drawn from the run's seed on a stream
//! named by (epoch, step): nothing to save, so a run resumed mid-epoch
//! draws what the uninterrupted run drew, bit for bit.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Pixels of padding on each side.
pub const PAD: usize = 4;

/// Crops and flips for images of `channels x side x side` (channels first).
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    channels: usize,
    side: usize,
    seed: u64,
    /// Per channel, the value a black pixel has after normalisation: the
    /// padding is black, as torchvision pads before normalising.
    fill: Vec<f32>,
}

impl Augment {
    /// An augmentation for the run's `seed`; `fill[c]` is the padding.
    pub fn new(channels: usize, side: usize, seed: u64, fill: Vec<f32>) -> Self {
        assert_eq!(fill.len(), channels, "one padding value per channel");
        Augment {
            channels,
            side,
            seed,
            fill,
        }
    }

    /// Crops and flips the images in `x` (a batch, one image after
    /// another), the `step`-th batch of `epoch`.
    pub fn apply(&self, x: &mut [f32], epoch: usize, step: usize) {
        let (s, c) = (self.side, self.channels);
        let size = c * s * s;
        // Its own seed and stream: data order and validation use others.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6175_676d_656e_7400);
        rng.set_stream(((epoch as u64) << 32) | step as u64);
        let mut src = vec![0f32; size];
        for image in x.chunks_exact_mut(size) {
            let dy = rng.random_range(0..=2 * PAD);
            let dx = rng.random_range(0..=2 * PAD);
            let flip = rng.random_bool(0.5);
            src.copy_from_slice(image);
            self.crop(&src, image, dy, dx, flip);
        }
    }

    /// `dst[y][x]` = the padded `src` at `(y + dy, x' + dx)`, `x'` the
    /// flipped column when `flip`.
    fn crop(&self, src: &[f32], dst: &mut [f32], dy: usize, dx: usize, flip: bool) {
        let s = self.side;
        // Columns of the crop (before flipping) that fall inside the image:
        // crop column c reads image column c + dx - PAD.
        let lo = PAD.saturating_sub(dx).min(s);
        let hi = (s + PAD).saturating_sub(dx).min(s).max(lo);
        for (ch, fill) in self.fill.iter().enumerate() {
            let plane = &src[ch * s * s..(ch + 1) * s * s];
            let out = &mut dst[ch * s * s..(ch + 1) * s * s];
            for (y, row) in out.chunks_exact_mut(s).enumerate() {
                row.fill(*fill);
                let Some(sy) = (y + dy).checked_sub(PAD).filter(|&v| v < s) else {
                    continue;
                };
                let from = &plane[sy * s + lo + dx - PAD..sy * s + hi + dx - PAD];
                if flip {
                    // Crop column c lands at s - 1 - c.
                    let to = &mut row[s - hi..s - lo];
                    to.iter_mut()
                        .zip(from.iter().rev())
                        .for_each(|(t, f)| *t = *f);
                } else {
                    row[lo..hi].copy_from_slice(from);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_centre_crop_unflipped_is_the_image_and_every_crop_comes_from_the_padding() {
        let a = Augment::new(1, 4, 0, vec![-9.0]);
        let img: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut out = vec![0.0; 16];
        a.crop(&img, &mut out, PAD, PAD, false);
        assert_eq!(out, img);
        a.crop(&img, &mut out, PAD, PAD, true);
        assert_eq!(&out[..4], &[3.0, 2.0, 1.0, 0.0]);
        // Shifted down by 1 and right by 2: the top row and two columns pad.
        a.crop(&img, &mut out, PAD - 1, PAD - 2, false);
        assert_eq!(&out[..4], &[-9.0; 4]);
        assert_eq!(&out[4..8], &[-9.0, -9.0, 0.0, 1.0]);
    }

    /// Every offset and flip against the definition, pixel by pixel.
    #[test]
    fn every_crop_matches_the_padded_image() {
        let s = 5;
        let a = Augment::new(2, s, 0, vec![-1.0, -2.0]);
        let img: Vec<f32> = (0..2 * s * s).map(|v| v as f32).collect();
        let mut out = vec![0.0; 2 * s * s];
        for dy in 0..=2 * PAD {
            for dx in 0..=2 * PAD {
                for flip in [false, true] {
                    a.crop(&img, &mut out, dy, dx, flip);
                    for (i, &got) in out.iter().enumerate() {
                        let (ch, y, x) = (i / (s * s), i / s % s, i % s);
                        let col = if flip { s - 1 - x } else { x };
                        let (py, px) = (y + dy, col + dx);
                        let inside = (PAD..PAD + s).contains(&py) && (PAD..PAD + s).contains(&px);
                        let want = match inside {
                            true => img[ch * s * s + (py - PAD) * s + px - PAD],
                            false => a.fill[ch],
                        };
                        assert_eq!(got, want, "dy {dy} dx {dx} flip {flip} at {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_draws_the_same_crops_for_the_same_epoch_and_step_only() {
        let a = Augment::new(3, 8, 42, vec![0.0; 3]);
        let img: Vec<f32> = (0..3 * 64 * 16).map(|v| v as f32).collect();
        let run = |e, s| {
            let mut x = img.clone();
            a.apply(&mut x, e, s);
            x
        };
        assert_eq!(run(1, 7), run(1, 7));
        assert_ne!(run(1, 7), run(1, 8));
        assert_ne!(run(1, 7), run(2, 7));
    }
}

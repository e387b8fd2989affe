//! The batch norm backward's per-channel sums, `sum dy` and
//! `sum dy * xhat`, in LANES f64 lanes as [`super::lane_sum`] sums them.
//! The plain loop converts and adds one value at a time: compiled for
//! AVX-512 it was a tenth of a ResNet-20 step on the Intel VM; on the AMD
//! VM (AVX2, no AVX-512) its baseline build was 6-8% of a step's profile
//! samples (docs/BENCHMARKS.md). Here the full lanes are summed in
//! registers, AVX-512's eight f64s in one, AVX2's in two; the same
//! operations in the same order per lane, so the same bits.

use super::{Gate, Planes, LANES};
use crate::registers::Registers;

/// Channel `ch`'s `sum dy` and `sum dy * xhat` (`xhat = (x - m) * k`),
/// in the widest registers this CPU has.
pub(super) fn grad_sums(
    dy: &[f32],
    x: &[f32],
    s: Planes,
    ch: usize,
    mk: [f64; 2],
    gate: Option<Gate>,
) -> (f64, f64) {
    grad_sums_with(dy, x, s, ch, mk, gate, Registers::widest())
}

/// [`grad_sums`] in the registers `regs` (which only a CPU that has them
/// may ask for): each plane's last `len % LANES` values into the first
/// lanes, then the rest eight at a time, one to a lane.
pub(super) fn grad_sums_with(
    dy: &[f32],
    x: &[f32],
    s: Planes,
    ch: usize,
    mk: [f64; 2],
    gate: Option<Gate>,
    regs: Registers,
) -> (f64, f64) {
    let (mut sd, mut sdx) = ([0f64; LANES], [0f64; LANES]);
    for (g, v) in s.of(dy, ch).zip(s.of(x, ch)) {
        let (gc, vc) = (g.chunks_exact(LANES), v.chunks_exact(LANES));
        grad_rest(
            gc.remainder(),
            vc.remainder(),
            [&mut sd, &mut sdx],
            mk,
            gate,
        );
        let sums = [&mut sd, &mut sdx];
        match regs {
            // SAFETY: the caller asks for AVX-512 only where the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Registers::Avx512 => unsafe { grad_lanes_avx512(gc, vc, sums, mk, gate) },
            // SAFETY: the caller asks for AVX2 only where the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Registers::Avx2 => unsafe { grad_lanes_avx2(gc, vc, sums, mk, gate) },
            _ => {
                let [sd, sdx] = sums;
                for (g, v) in gc.zip(vc) {
                    grad_rest(g, v, [&mut *sd, &mut *sdx], mk, gate);
                }
            }
        }
    }
    (sd.iter().sum(), sdx.iter().sum())
}

/// Up to LANES values into the first lanes of both sums.
#[inline(always)]
fn grad_rest(
    g: &[f32],
    v: &[f32],
    [sd, sdx]: [&mut [f64; LANES]; 2],
    [m, k]: [f64; 2],
    gate: Option<Gate>,
) {
    for (j, (g, v)) in g.iter().zip(v).enumerate() {
        let g = gate.map_or(*g, |t| t.pass(*g, *v));
        sd[j] += g as f64;
        sdx[j] += g as f64 * (*v as f64 - m) * k;
    }
}

/// ReLU's gate on eight values in AVX registers, as [`Gate::pass`] opens
/// it: where `(v - m) * k + b > 0` in f32, as the forward computed it;
/// every lane open without a gate (the stand-in's `y` is 1 but for an
/// infinite or NaN `v`, hence the all-ones mask).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Open {
    m: std::arch::x86_64::__m256,
    k: std::arch::x86_64::__m256,
    b: std::arch::x86_64::__m256,
    ungated: std::arch::x86_64::__m256,
}

#[cfg(target_arch = "x86_64")]
impl Open {
    #[target_feature(enable = "avx2")]
    #[inline]
    fn new(gate: Option<Gate>) -> Self {
        use std::arch::x86_64::*;
        let t = gate.unwrap_or(Gate {
            m: 0.0,
            k: 0.0,
            b: 1.0,
        });
        let all = if gate.is_none() { -1 } else { 0 };
        Open {
            m: _mm256_set1_ps(t.m),
            k: _mm256_set1_ps(t.k),
            b: _mm256_set1_ps(t.b),
            ungated: _mm256_castsi256_ps(_mm256_set1_epi32(all)),
        }
    }

    /// All ones where the gradient passes, zeros where the gate shuts.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn mask(self, v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let y = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, self.m), self.k), self.b);
        _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()),
            self.ungated,
        )
    }
}

/// [`grad_rest`] over whole chunks of LANES, the sums in AVX-512 registers.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn grad_lanes_avx512(
    gc: std::slice::ChunksExact<'_, f32>,
    vc: std::slice::ChunksExact<'_, f32>,
    [sd, sdx]: [&mut [f64; LANES]; 2],
    mk: [f64; 2],
    gate: Option<Gate>,
) {
    use std::arch::x86_64::*;
    let (m, k) = (_mm512_set1_pd(mk[0]), _mm512_set1_pd(mk[1]));
    let open = Open::new(gate);
    // SAFETY: the arrays hold LANES f64s, the chunks LANES f32s.
    unsafe {
        let (mut a, mut b) = (_mm512_loadu_pd(sd.as_ptr()), _mm512_loadu_pd(sdx.as_ptr()));
        for (g, v) in gc.zip(vc) {
            let (g, v) = (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(v.as_ptr()));
            let g = _mm512_cvtps_pd(_mm256_and_ps(g, open.mask(v)));
            let v = _mm512_cvtps_pd(v);
            a = _mm512_add_pd(a, g);
            b = _mm512_add_pd(b, _mm512_mul_pd(_mm512_mul_pd(g, _mm512_sub_pd(v, m)), k));
        }
        _mm512_storeu_pd(sd.as_mut_ptr(), a);
        _mm512_storeu_pd(sdx.as_mut_ptr(), b);
    }
}

/// [`grad_rest`] over whole chunks of LANES, each sum's lanes in two AVX2
/// registers (lanes 0-3 and 4-7).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn grad_lanes_avx2(
    gc: std::slice::ChunksExact<'_, f32>,
    vc: std::slice::ChunksExact<'_, f32>,
    [sd, sdx]: [&mut [f64; LANES]; 2],
    mk: [f64; 2],
    gate: Option<Gate>,
) {
    use std::arch::x86_64::*;
    let (m, k) = (_mm256_set1_pd(mk[0]), _mm256_set1_pd(mk[1]));
    let open = Open::new(gate);
    // Four values widened to f64: the low or the high half of eight.
    let low = |v: __m256| _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    let high = |v: __m256| _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
    // SAFETY: the arrays hold LANES f64s, the chunks LANES f32s.
    unsafe {
        let (sd, sdx) = (sd.as_mut_ptr(), sdx.as_mut_ptr());
        let mut a = [_mm256_loadu_pd(sd), _mm256_loadu_pd(sd.add(4))];
        let mut b = [_mm256_loadu_pd(sdx), _mm256_loadu_pd(sdx.add(4))];
        for (g, v) in gc.zip(vc) {
            let (g, v) = (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(v.as_ptr()));
            let g = _mm256_and_ps(g, open.mask(v));
            for (h, (g, v)) in [(low(g), low(v)), (high(g), high(v))]
                .into_iter()
                .enumerate()
            {
                a[h] = _mm256_add_pd(a[h], g);
                b[h] = _mm256_add_pd(
                    b[h],
                    _mm256_mul_pd(_mm256_mul_pd(g, _mm256_sub_pd(v, m)), k),
                );
            }
        }
        _mm256_storeu_pd(sd, a[0]);
        _mm256_storeu_pd(sd.add(4), a[1]);
        _mm256_storeu_pd(sdx, b[0]);
        _mm256_storeu_pd(sdx.add(4), b[1]);
    }
}

//! Flex (Burn's CPU backend): each optimizer step as one pass over each
//! parameter, in place where a buffer is the step's alone.
//!
//! [`reference`]'s tensor ops read and write a whole parameter about ten
//! times per Adam step (each `mul_scalar` a serial loop, the bias
//! correction a broadcast): on the MNIST MLP they were about half of a
//! training step. Here each element goes through the same operations in
//! the same order, each rounded to f32 as the tensor op rounds it (Rust
//! never fuses a multiply and an add on its own), so the results are
//! [`reference`]'s bits; a test holds that. Inputs the pass does not take
//! (another dtype, a skipped step) go to [`reference`]. The loss scaler's
//! unscale-and-check is one pass per gradient the same way.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

use crate::{reference, AdamStep, Group, SgdStep};

/// Elements per task: large enough that a task's start is noise, small
/// enough that the MLP's 628k-element weight splits across the cores.
const CHUNK: usize = 1 << 14;

/// Adam's constants for one step, each the f32 its tensor op uses.
#[derive(Clone, Copy)]
struct AdamConsts {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// `sqrt(1 - b2^t) / (1 - b1^t)`, as [`reference`] computes it.
    combined: f32,
    /// `eps * sqrt(1 - b2^t)`.
    eps_term: f32,
    lr: f32,
    /// L2 weight decay added to the gradient (Adam), if any.
    l2: Option<f32>,
    /// The parameter's factor `1 - lr * wd` (AdamW), if any.
    decay: Option<f32>,
}

pub(crate) fn adam(
    step: &AdamStep<Flex>,
    group: Group<Flex>,
    grads: Vec<Tensor<Flex, 1>>,
    skip: Option<Tensor<Flex, 1>>,
) -> Group<Flex> {
    let half_state = group.first.is_some() != group.second.is_some();
    if half_state || skips(skip.as_ref()) || !takes(&group, &grads) {
        return reference::adam(step, group, grads, skip);
    }
    let (combined, eps_term) = reference::bias_corrections(step);
    let wd = step.weight_decay;
    let k = AdamConsts {
        beta1: step.beta1 as f32,
        one_minus_beta1: (1.0 - step.beta1) as f32,
        beta2: step.beta2 as f32,
        one_minus_beta2: (1.0 - step.beta2) as f32,
        combined: scalar(combined),
        eps_term: scalar(eps_term),
        lr: step.lr as f32,
        l2: (!step.decoupled && wd > 0.0).then_some(wd as f32),
        decay: (step.decoupled && wd > 0.0).then_some((1.0 - step.lr * wd) as f32),
    };
    let n = group.params.len();
    let mut firsts = States(group.first.map(|l| l.into_iter()));
    let mut seconds = States(group.second.map(|l| l.into_iter()));
    let mut out = Group {
        params: Vec::with_capacity(n),
        first: Some(Vec::with_capacity(n)),
        second: Some(Vec::with_capacity(n)),
    };
    for (p, g) in group.params.into_iter().zip(grads) {
        let p = primitive(p);
        let p = values(&p);
        let (mut new_p, mut m, mut v) = (
            owned(g),
            firsts.next_owned(p.len()),
            seconds.next_owned(p.len()),
        );
        let (dst, m_s, v_s) = (slice_mut(&mut new_p), slice_mut(&mut m), slice_mut(&mut v));
        (
            dst.par_chunks_mut(CHUNK),
            m_s.par_chunks_mut(CHUNK),
            v_s.par_chunks_mut(CHUNK),
        )
            .into_par_iter()
            .zip(p.par_chunks(CHUNK))
            .for_each(|((g, m, v), p)| adam_pass(&k, p, g, m, v));
        out.params.push(tensor(new_p));
        push(&mut out.first, m);
        push(&mut out.second, v);
    }
    out
}

/// One Adam step over a slice: `g` comes in as the gradient and leaves as
/// the new parameter; `m` and `v` are updated in place. Built for the widest
/// vectors the CPU has: the square root and the division are most of the
/// work, and one at a time they were most of an MLP's step.
fn adam_pass(k: &AdamConsts, p: &[f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { adam_avx512(k, p, g, m, v) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { adam_avx2(k, p, g, m, v) };
        }
    }
    adam_lanes(k, p, g, m, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn adam_avx512(k: &AdamConsts, p: &[f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    adam_lanes(k, p, g, m, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_avx2(k: &AdamConsts, p: &[f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    adam_lanes(k, p, g, m, v)
}

/// [`adam_step`] with the weight-decay choices fixed, so that the loop has
/// no branch and vectorizes.
#[inline(always)]
fn adam_lanes(k: &AdamConsts, p: &[f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    match (k.l2.is_some(), k.decay.is_some()) {
        (false, false) => adam_step::<false, false>(k, p, g, m, v),
        (true, false) => adam_step::<true, false>(k, p, g, m, v),
        (false, true) => adam_step::<false, true>(k, p, g, m, v),
        (true, true) => adam_step::<true, true>(k, p, g, m, v),
    }
}

/// [`reference::adam`]'s operations on each element, one rounding each.
#[inline(always)]
fn adam_step<const L2: bool, const DECAY: bool>(
    k: &AdamConsts,
    p: &[f32],
    g: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = p.len();
    let (g, m, v) = (&mut g[..n], &mut m[..n], &mut v[..n]);
    let (wd, decay) = (k.l2.unwrap_or(0.0), k.decay.unwrap_or(1.0));
    for i in 0..n {
        let grad = if L2 { g[i] + p[i] * wd } else { g[i] };
        m[i] = m[i] * k.beta1 + grad * k.one_minus_beta1;
        v[i] = v[i] * k.beta2 + (grad * grad) * k.one_minus_beta2;
        let delta = (m[i] * k.combined) / (v[i].sqrt() + k.eps_term);
        let base = if DECAY { p[i] * decay } else { p[i] };
        g[i] = base - delta * k.lr;
    }
}

pub(crate) fn sgd(
    step: &SgdStep,
    group: Group<Flex>,
    grads: Vec<Tensor<Flex, 1>>,
    skip: Option<Tensor<Flex, 1>>,
) -> Group<Flex> {
    if skips(skip.as_ref()) || !takes(&group, &grads) {
        return reference::sgd(step, group, grads, skip);
    }
    let lr = step.lr as f32;
    let l2 = (step.weight_decay > 0.0).then_some(step.weight_decay as f32);
    let momentum = step.momentum.map(|mu| mu as f32);
    let had_state = group.first.is_some();
    let mut bufs = States(group.first.map(|l| l.into_iter()));
    let n = group.params.len();
    let mut out = Group {
        params: Vec::with_capacity(n),
        first: momentum.map(|_| Vec::with_capacity(n)),
        second: None,
    };
    for (p, g) in group.params.into_iter().zip(grads) {
        let p = primitive(p);
        let p = values(&p);
        let mut new_p = owned(g);
        // The first momentum buffer is the (decayed) gradient itself.
        let mut buf = momentum.map(|mu| (mu, bufs.next_owned(p.len())));
        let dst = slice_mut(&mut new_p);
        match buf.as_mut() {
            Some((mu, buf)) => {
                let mu = *mu;
                dst.par_chunks_mut(CHUNK)
                    .zip(slice_mut(buf).par_chunks_mut(CHUNK))
                    .zip(p.par_chunks(CHUNK))
                    .for_each(|((g, b), p)| momentum_pass(lr, l2, mu, had_state, p, g, b))
            }
            None => dst
                .par_chunks_mut(CHUNK)
                .zip(p.par_chunks(CHUNK))
                .for_each(|(g, p)| plain_pass(lr, l2, p, g)),
        }
        out.params.push(tensor(new_p));
        if let Some((_, buf)) = buf {
            push(&mut out.first, buf);
        }
    }
    out
}

/// SGD with momentum over a slice: `buf = buf * mu + g` (`g` itself at the
/// first step), `p - buf * lr` written over `g`.
fn momentum_pass(
    lr: f32,
    l2: Option<f32>,
    mu: f32,
    had_state: bool,
    p: &[f32],
    g: &mut [f32],
    buf: &mut [f32],
) {
    for ((p, g), b) in p.iter().zip(g).zip(buf) {
        let grad = match l2 {
            Some(wd) => *g + *p * wd,
            None => *g,
        };
        *b = if had_state { *b * mu + grad } else { grad };
        *g = *p - *b * lr;
    }
}

/// Plain SGD over a slice: `p - g * lr` written over `g`.
fn plain_pass(lr: f32, l2: Option<f32>, p: &[f32], g: &mut [f32]) {
    for (p, g) in p.iter().zip(g) {
        let grad = match l2 {
            Some(wd) => *g + *p * wd,
            None => *g,
        };
        *g = *p - grad * lr;
    }
}

/// [`crate::ForeachBackend::foreach_unscale_check`] as one pass per
/// gradient: each value times `inv_scale` (the reference's one f32
/// multiplication), in place where the gradient is the step's alone, and
/// the flag 1 where a product is inf or NaN (where the reference's
/// `sum(g * 0)` is NaN), else 0. Gradients or a scale not in f32 go to
/// [`reference`].
pub(crate) fn unscale_check(
    grads: Vec<Tensor<Flex, 1>>,
    inv_scale: Tensor<Flex, 1>,
) -> (Vec<Tensor<Flex, 1>>, Tensor<Flex, 1>) {
    let f32s = grads.iter().all(|g| g.dtype() == DType::F32);
    if !f32s || inv_scale.dtype() != DType::F32 || inv_scale.dims() != [1] {
        return reference::unscale_check(grads, inv_scale);
    }
    let device = inv_scale.device();
    let s = scalar(inv_scale);
    let mut found = false;
    let grads = grads
        .into_iter()
        .map(|g| {
            let mut g = owned(g);
            found |= slice_mut(&mut g)
                .par_chunks_mut(CHUNK)
                .map(|c| unscale_pass(c, s))
                .reduce(|| false, |a, b| a | b);
            tensor(g)
        })
        .collect();
    let flag = TensorData::new(vec![if found { 1.0f32 } else { 0.0 }], [1]);
    (grads, Tensor::from_data(flag, &device))
}

/// `g *= s` over a chunk; whether a product is not finite.
fn unscale_pass(g: &mut [f32], s: f32) -> bool {
    let mut bad = false;
    for v in g {
        *v *= s;
        bad |= !v.is_finite();
    }
    bad
}

/// Whether a skip flag is set (above 0, as [`reference`] reads it).
fn skips(skip: Option<&Tensor<Flex, 1>>) -> bool {
    skip.is_some_and(|s| scalar(s.clone()) > 0.0)
}

/// Whether the pass takes this group: every list f32, each the parameters'
/// lengths, and as many gradients as parameters.
fn takes(group: &Group<Flex>, grads: &[Tensor<Flex, 1>]) -> bool {
    let mut lists = vec![&group.params[..], grads];
    lists.extend(group.first.as_deref());
    lists.extend(group.second.as_deref());
    crate::kernel_ready(&lists)
}

/// The optimizer state of each parameter in turn, or zeros where there is
/// none yet (a first step, as [`reference`] starts it).
struct States(Option<std::vec::IntoIter<Tensor<Flex, 1>>>);

impl States {
    fn next_owned(&mut self, len: usize) -> FlexTensor {
        match self.0.as_mut().and_then(|l| l.next()) {
            Some(t) => owned(t),
            None => FlexTensor::zeros([len].into(), DType::F32),
        }
    }
}

fn primitive(t: Tensor<Flex, 1>) -> FlexTensor {
    t.into_primitive().tensor()
}

/// A tensor's values in order (a contiguous copy where it is a view).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// The tensor's values in a buffer no one else holds, laid out from its
/// start: the buffer itself where it already is, else a copy.
fn owned(t: Tensor<Flex, 1>) -> FlexTensor {
    let t = primitive(t);
    let n = t.layout().shape().num_elements();
    if t.is_unique() && t.layout().contiguous_offsets() == Some((0, n)) {
        return t;
    }
    FlexTensor::from_data(TensorData::new(values(&t).into_owned(), [n]))
}

/// The f32 elements of a tensor [`owned`] returned.
fn slice_mut(t: &mut FlexTensor) -> &mut [f32] {
    let n = t.layout().shape().num_elements();
    &mut t
        .try_storage_mut::<f32>()
        .expect("owned() returns a buffer no one else holds")[..n]
}

fn tensor(t: FlexTensor) -> Tensor<Flex, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn push(list: &mut Option<Vec<Tensor<Flex, 1>>>, t: FlexTensor) {
    list.get_or_insert_with(Vec::new).push(tensor(t));
}

/// A one-element tensor's value.
fn scalar(t: Tensor<Flex, 1>) -> f32 {
    t.into_data().to_vec::<f32>().expect("an f32 scalar")[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass's gradient, first and second moments.
    type Slices<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32]);

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let n = 1037;
        let wave = |s: f32| (0..n).map(|i| ((i as f32) * s).sin()).collect::<Vec<f32>>();
        let p = wave(0.37);
        for (l2, decay) in [(None, None), (Some(0.1), None), (None, Some(0.999))] {
            let k = AdamConsts {
                beta1: 0.9,
                one_minus_beta1: 0.1,
                beta2: 0.999,
                one_minus_beta2: 0.001,
                combined: 0.35,
                eps_term: 1e-9,
                lr: 1e-3,
                l2,
                decay,
            };
            let run = |f: &dyn Fn(Slices)| {
                let (mut g, mut m) = (wave(1.3), wave(0.7));
                let mut v: Vec<f32> = wave(2.1).iter().map(|x| x * x).collect();
                f((&mut g, &mut m, &mut v));
                [g, m, v].map(|l| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            };
            let plain = run(&|(g, m, v)| adam_lanes(&k, &p, g, m, v));
            assert_eq!(run(&|(g, m, v)| adam_pass(&k, &p, g, m, v)), plain);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                assert_eq!(
                    run(&|(g, m, v)| unsafe { adam_avx2(&k, &p, g, m, v) }),
                    plain
                );
            }
        }
    }
}

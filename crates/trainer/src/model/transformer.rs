//! A transformer over token sequences, for the grokking experiments and as
//! the model where mixed precision matters most. Under autocast on `Amp<B>`,
//! the projections, attention scores and MLP run in 16 bits; softmax,
//! LayerNorm, the residual stream, the embeddings and the loss stay in fp32,
//! as PyTorch's autocast lists have them.

use super::Init;
use crate::config::{Activation, Biases, NormPlace, TransformerInit, TransformerSpec};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// One block: multi-head self-attention and an MLP, each with a residual.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    wq: Linear<B>,
    wk: Linear<B>,
    wv: Linear<B>,
    wo: Linear<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    ln1: Option<LayerNorm<B>>,
    ln2: Option<LayerNorm<B>>,
}

/// Token and learned position embeddings, blocks, and the logits of the
/// last position.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    embed: Param<Tensor<B, 2>>,
    pos: Param<Tensor<B, 2>>,
    blocks: Vec<Block<B>>,
    ln_final: Option<LayerNorm<B>>,
    /// None: tied to `embed`.
    unembed: Option<Linear<B>>,
    heads: usize,
    causal: bool,
    gelu: bool,
    post_norm: bool,
    classes: usize,
    /// Logits at every position (next-token prediction), not only the last.
    every_position: bool,
}

impl<B: Backend> Transformer<B> {
    /// A transformer for sequences up to `context` tokens from `vocab`,
    /// predicting one of `classes`.
    pub fn new(
        init: &mut Init<B>,
        spec: TransformerSpec,
        vocab: usize,
        context: usize,
        classes: usize,
    ) -> Self {
        let d = spec.d_model;
        let nanda = spec.init == TransformerInit::Nanda2023;
        let std = 1.0 / (d as f32).sqrt();
        let linear = |init: &mut Init<B>, i: usize, o: usize, bias: bool, std: f32| match nanda {
            true => init.linear_normal(i, o, std, bias),
            false => init.linear_uniform(i, o, bias),
        };
        let (proj_bias, mlp_bias) = (spec.biases == Biases::All, spec.biases != Biases::None);
        let norm = |init: &mut Init<B>| (spec.norm != NormPlace::None).then(|| init.layer_norm(d));
        let blocks = (0..spec.layers)
            .map(|_| Block {
                wq: linear(init, d, d, proj_bias, std),
                wk: linear(init, d, d, proj_bias, std),
                wv: linear(init, d, d, proj_bias, std),
                wo: linear(init, d, d, proj_bias, std),
                fc1: linear(init, d, spec.d_mlp, mlp_bias, std),
                fc2: linear(init, spec.d_mlp, d, mlp_bias, std),
                ln1: norm(init),
                ln2: norm(init),
            })
            .collect();
        // Embeddings with standard deviation 1/sqrt(d), as Nanda et al.'s
        // model draws them (the default draws them uniform).
        let embedding = |init: &mut Init<B>, rows: usize| match nanda {
            true => init.normal([rows, d], std),
            false => init.param([rows, d], (3.0 / d as f32).sqrt()),
        };
        let embed = embedding(init, vocab);
        let pos = embedding(init, context);
        let ln_final = (spec.norm == NormPlace::Pre).then(|| init.layer_norm(d));
        let unembed_std = 1.0 / (classes as f32).sqrt();
        Self {
            embed,
            pos,
            blocks,
            ln_final,
            unembed: (!spec.tied).then(|| linear(init, d, classes, proj_bias, unembed_std)),
            heads: spec.heads,
            causal: spec.causal,
            gelu: spec.activation == Activation::Gelu,
            post_norm: spec.norm == NormPlace::Post,
            classes,
            every_position: false,
        }
    }

    /// Logits at every position, `[batch * length, classes]` in sample
    /// order, for next-token prediction.
    pub fn every_position(mut self, on: bool) -> Self {
        self.every_position = on;
        self
    }

    /// Logits `[batch, classes]` from token ids `[batch, length]` (as
    /// floats, the way batches arrive); `[batch * length, classes]` when
    /// predicting at every position.
    pub fn forward(&self, tokens: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, t] = tokens.dims();
        let d = self.embed.dims()[1];
        let ids: Tensor<B, 1, Int> = tokens.int().reshape([n * t]);
        let x = self.embed.val().select(0, ids).reshape([n, t, d]);
        // Broadcast, not `expand`: Flex adds a stride-0 view one element at
        // a time through its index iterator.
        let pos = self.pos.val().slice([0..t, 0..d]).reshape([1, t, d]);
        let mut x = x + pos;
        // Where only the last position's logits are read, the last block
        // computes its queries, sums, norms and MLP for that position alone:
        // a block mixes positions only in its attention's keys and values.
        let blocks = self.blocks.len();
        for (i, b) in self.blocks.iter().enumerate() {
            x = match !self.every_position && i + 1 == blocks {
                true => self.last_block(b, x),
                false => self.block(b, x),
            };
        }
        if let Some(ln) = &self.ln_final {
            x = ln.forward(x);
        }
        let last = if self.every_position {
            x.reshape([n * t, d])
        } else {
            let t = x.dims()[1];
            x.slice([0..n, t - 1..t, 0..d]).reshape([n, d])
        };
        match &self.unembed {
            Some(u) => u.forward(last),
            None => {
                let e = self.embed.val().slice([0..self.classes, 0..d]);
                last.matmul(e.transpose())
            }
        }
    }

    /// Attention and MLP with their residuals; the sums of a 16-bit branch
    /// and the f32 stream are f32 (`Amp<B>` promotes).
    fn block(&self, b: &Block<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.post_norm {
            let x = norm(&b.ln1, x.clone() + self.attention(b, x));
            norm(&b.ln2, x.clone() + self.mlp(b, x))
        } else {
            let x = x.clone() + self.attention(b, norm(&b.ln1, x));
            x.clone() + self.mlp(b, norm(&b.ln2, x))
        }
    }

    /// [`Self::block`]'s output at the last position alone, `[n, 1, d]`
    /// from `[n, t, d]`: every position's keys and values, one query.
    fn last_block(&self, b: &Block<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, d] = x.dims();
        let last = |y: Tensor<B, 3>| y.slice([0..n, t - 1..t, 0..d]);
        if self.post_norm {
            let a = self.attend(b, last(x.clone()), x.clone());
            let x = norm(&b.ln1, last(x) + a);
            norm(&b.ln2, x.clone() + self.mlp(b, x))
        } else {
            let h = norm(&b.ln1, x.clone());
            let x = last(x) + self.attend(b, last(h.clone()), h);
            x.clone() + self.mlp(b, norm(&b.ln2, x))
        }
    }

    fn mlp(&self, b: &Block<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = b.fc1.forward(x);
        let h = if self.gelu { gelu(h) } else { relu(h) };
        b.fc2.forward(h)
    }

    /// Multi-head self-attention: scores `q k^T / sqrt(d_head)` (in the
    /// compute dtype under autocast), softmax (f32), then `p v`.
    pub fn attention(&self, b: &Block<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.attend(b, x.clone(), x)
    }

    /// [`Self::attention`] for the queries of the last `tq` positions of
    /// `xkv`, read from `xq` `[n, tq, d]`: `[n, tq, d]`.
    fn attend(&self, b: &Block<B>, xq: Tensor<B, 3>, xkv: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, tq, d] = xq.dims();
        let t = xkv.dims()[1];
        let (h, dh) = (self.heads, d / self.heads);
        let split = |y: Tensor<B, 3>, len| y.reshape([n, len, h, dh]).swap_dims(1, 2);
        let q = split(b.wq.forward(xq), tq);
        let k = split(b.wk.forward(xkv.clone()), t);
        let v = split(b.wv.forward(xkv), t);
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (dh as f64).sqrt());
        // The last position sees every key: no mask for it alone.
        let scores = if self.causal && tq > 1 {
            let mask = causal_mask::<B>(tq, t, &scores.device()).expand([n, h, tq, t]);
            scores.mask_fill(mask, f32::NEG_INFINITY)
        } else {
            scores
        };
        let p = softmax(scores, 3);
        let out = p.matmul(v).swap_dims(1, 2).reshape([n, tq, d]);
        b.wo.forward(out)
    }

    /// The first block, for tests.
    pub fn first_block(&self) -> &Block<B> {
        &self.blocks[0]
    }
}

/// `[1, 1, tq, t]` for the queries of the last `tq` of `t` positions, true
/// where a key lies after its query: a query may not see later keys.
fn causal_mask<B: Backend>(tq: usize, t: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let v: Vec<bool> = (0..tq * t).map(|i| i % t > t - tq + i / t).collect();
    Tensor::from_data(TensorData::new(v, [1, 1, tq, t]), device)
}

/// The layer norm where the model has one.
fn norm<B: Backend>(ln: &Option<LayerNorm<B>>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match ln {
        Some(ln) => ln.forward(x),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type F = burn::backend::Flex;

    fn host(t: Tensor<F, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// `x W + b` on the host; `x` is `[rows, d_in]`, `W` `[d_in, d_out]`.
    fn linear(x: &[f32], l: &Linear<F>) -> Vec<f32> {
        let w = host(l.weight.val());
        let b: Vec<f32> = l.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
        let (d_in, d_out) = (l.weight.dims()[0], l.weight.dims()[1]);
        let rows = x.len() / d_in;
        let mut y = vec![0.0; rows * d_out];
        for r in 0..rows {
            for o in 0..d_out {
                y[r * d_out + o] = b[o]
                    + (0..d_in)
                        .map(|i| x[r * d_in + i] * w[i * d_out + o])
                        .sum::<f32>();
            }
        }
        y
    }

    /// Multi-head causal attention against loops over positions and heads.
    #[test]
    fn attention_matches_a_naive_computation() {
        let dev = Default::default();
        let mut init = super::super::Init::<F>::new(3, &dev);
        let spec = TransformerSpec {
            d_model: 8,
            heads: 2,
            d_mlp: 16,
            layers: 1,
            causal: true,
            activation: Activation::Relu,
            norm: NormPlace::None,
            tied: false,
            biases: Biases::All,
            init: TransformerInit::Default,
        };
        let m = Transformer::<F>::new(&mut init, spec, 10, 4, 10);
        let (n, t, d, h, dh) = (2, 4, 8, 2, 4);
        let xs: Vec<f32> = (0..n * t * d)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let x = Tensor::<F, 3>::from_data(TensorData::new(xs.clone(), [n, t, d]), &dev);
        let got: Vec<f32> = m
            .attention(m.first_block(), x)
            .into_data()
            .to_vec()
            .unwrap();
        let b = m.first_block();
        let (q, k, v) = (linear(&xs, &b.wq), linear(&xs, &b.wk), linear(&xs, &b.wv));
        let at = |y: &[f32], bi: usize, pos: usize, hi: usize, e: usize| {
            y[(bi * t + pos) * d + hi * dh + e]
        };
        let mut ctx = vec![0.0f32; n * t * d];
        for bi in 0..n {
            for hi in 0..h {
                for i in 0..t {
                    // Causal: position i sees keys 0..=i only.
                    let s: Vec<f32> = (0..=i)
                        .map(|j| {
                            (0..dh)
                                .map(|e| at(&q, bi, i, hi, e) * at(&k, bi, j, hi, e))
                                .sum::<f32>()
                                / (dh as f32).sqrt()
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let z: f32 = s.iter().map(|x| (x - mx).exp()).sum();
                    for e in 0..dh {
                        ctx[(bi * t + i) * d + hi * dh + e] = (0..=i)
                            .map(|j| (s[j] - mx).exp() / z * at(&v, bi, j, hi, e))
                            .sum();
                    }
                }
            }
        }
        let want = linear(&ctx, &b.wo);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// The last block at the last position alone gives what the whole
    /// block gives there, to rounding: the logits and the gradients of
    /// parameters in both blocks, pre- and post-norm, causal or not, tied
    /// or not.
    #[test]
    fn the_last_position_alone_gives_the_whole_blocks_values() {
        type A = burn::backend::Autodiff<F>;
        let dev = Default::default();
        let (n, t, classes) = (3, 5, 7);
        let cases = [
            (NormPlace::Pre, true, false),
            (NormPlace::Post, false, true),
            (NormPlace::Pre, false, false),
            (NormPlace::Post, true, false),
        ];
        for (norm, causal, tied) in cases {
            let spec = TransformerSpec {
                d_model: 16,
                heads: 4,
                d_mlp: 32,
                layers: 2,
                causal,
                activation: Activation::Gelu,
                norm,
                tied,
                biases: Biases::All,
                init: TransformerInit::Default,
            };
            let m =
                Transformer::<A>::new(&mut super::super::Init::new(3, &dev), spec, 11, t, classes);
            let ids: Vec<f32> = (0..n * t).map(|i| ((i * 7 + 2) % 11) as f32).collect();
            let tokens = Tensor::<A, 2>::from_data(TensorData::new(ids, [n, t]), &dev);
            let w: Vec<f32> = (0..n * classes).map(|i| (i as f32 * 0.37).sin()).collect();
            let w = Tensor::<A, 2>::from_data(TensorData::new(w, [n, classes]), &dev);
            let run = |m: &Transformer<A>, every: bool| {
                let logits = m.forward(tokens.clone());
                let logits = match every {
                    true => logits
                        .reshape([n, t, classes])
                        .slice([0..n, t - 1..t, 0..classes]),
                    false => logits.reshape([n, 1, classes]),
                };
                let logits = logits.reshape([n, classes]);
                let grads = (logits.clone() * w.clone()).sum().backward();
                let (b0, b1) = (&m.blocks[0], &m.blocks[1]);
                let mut v: Vec<f32> = logits.inner().into_data().to_vec().unwrap();
                for p in [
                    &m.embed,
                    &b0.wv.weight,
                    &b1.wq.weight,
                    &b1.wk.weight,
                    &b1.fc1.weight,
                ] {
                    let g = p.val().grad(&grads).expect("a gradient");
                    v.extend(g.into_data().to_vec::<f32>().unwrap());
                }
                v
            };
            let (last, every) = (run(&m, false), run(&m.clone().every_position(true), true));
            assert_eq!(last.len(), every.len());
            assert!(every.iter().filter(|v| **v != 0.0).count() > every.len() / 2);
            for (i, (a, b)) in last.iter().zip(&every).enumerate() {
                let case = (norm, causal, tied);
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{case:?} [{i}]: {a} vs {b}"
                );
            }
        }
    }

    /// (mean, standard deviation, share within one deviation of 0).
    fn moments(p: &Param<Tensor<F, 2>>) -> (f32, f32, f32) {
        let v = host(p.val());
        let n = v.len() as f32;
        let mean = v.iter().sum::<f32>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        let inside = v.iter().filter(|x| x.abs() < sd).count() as f32 / n;
        (mean, sd, inside)
    }

    /// Nanda et al.'s model: biases only in the MLP, zero; every weight
    /// N(0, 1/d_model), the unembedding N(0, 1/classes). A normal puts 68.3%
    /// of its draws within one deviation, a uniform 57.7%.
    #[test]
    fn nanda2023_init_draws_their_distributions_and_biases() {
        let dev = Default::default();
        let mut init = super::super::Init::<F>::new(0, &dev);
        let spec = TransformerSpec {
            d_model: 128,
            heads: 4,
            d_mlp: 512,
            layers: 1,
            causal: true,
            activation: Activation::Relu,
            norm: NormPlace::None,
            tied: false,
            biases: Biases::Mlp,
            init: TransformerInit::Nanda2023,
        };
        let m = Transformer::<F>::new(&mut init, spec, 114, 3, 113);
        let b = m.first_block();
        for l in [&b.wq, &b.wk, &b.wv, &b.wo] {
            assert!(l.bias.is_none(), "attention projections have no bias");
        }
        let unembed = m.unembed.as_ref().unwrap();
        assert!(unembed.bias.is_none());
        for l in [&b.fc1, &b.fc2] {
            let bias: Vec<f32> = l.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
            assert!(bias.iter().all(|&x| x == 0.0), "MLP biases start at 0");
        }
        let d = 1.0 / 128f32.sqrt();
        let weights = [
            ("embed", &m.embed, d),
            ("wq", &b.wq.weight, d),
            ("wo", &b.wo.weight, d),
            ("fc1", &b.fc1.weight, d),
            ("fc2 (1/sqrt(d_model), not 1/sqrt(d_mlp))", &b.fc2.weight, d),
            ("unembed", &unembed.weight, 1.0 / 113f32.sqrt()),
        ];
        for (name, p, want) in weights {
            let (mean, sd, inside) = moments(p);
            assert!(mean.abs() < 0.05 * want, "{name}: mean {mean}");
            assert!(
                (sd / want - 1.0).abs() < 0.03,
                "{name}: sd {sd}, want {want}"
            );
            assert!(
                (inside - 0.683).abs() < 0.015,
                "{name}: {inside} within 1 sd"
            );
        }
        // The default draws uniform: the same test tells them apart.
        let mut init = super::super::Init::<F>::new(0, &dev);
        let spec = TransformerSpec {
            biases: Biases::All,
            init: TransformerInit::Default,
            ..spec
        };
        let m = Transformer::<F>::new(&mut init, spec, 114, 3, 113);
        assert!((moments(&m.first_block().wq.weight).2 - 0.577).abs() < 0.015);
        assert!(m.first_block().wq.bias.is_some());
    }
}

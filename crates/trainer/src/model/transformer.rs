//! A transformer over token sequences, for the grokking experiments and as
//! the model where mixed precision matters most. Under [`Autocast`], the
//! projections, attention scores and MLP run in 16 bits; softmax,
//! LayerNorm, the residual stream, the embeddings and the loss stay in fp32,
//! as PyTorch's autocast lists have them.

use super::Init;
use crate::config::{Activation, NormPlace, TransformerSpec};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use greentrain_amp::Autocast;

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
        let norm = |init: &mut Init<B>| (spec.norm != NormPlace::None).then(|| init.layer_norm(d));
        let blocks = (0..spec.layers)
            .map(|_| Block {
                wq: init.linear(d, d),
                wk: init.linear(d, d),
                wv: init.linear(d, d),
                wo: init.linear(d, d),
                fc1: init.linear(d, spec.d_mlp),
                fc2: init.linear(spec.d_mlp, d),
                ln1: norm(init),
                ln2: norm(init),
            })
            .collect();
        // Embeddings with standard deviation 1/sqrt(d) (uniform of the same
        // spread), as Nanda et al.'s model draws them.
        let bound = (3.0 / d as f32).sqrt();
        Self {
            embed: init.param([vocab, d], bound),
            pos: init.param([context, d], bound),
            blocks,
            ln_final: (spec.norm == NormPlace::Pre).then(|| init.layer_norm(d)),
            unembed: (!spec.tied).then(|| init.linear(d, classes)),
            heads: spec.heads,
            causal: spec.causal,
            gelu: spec.activation == Activation::Gelu,
            post_norm: spec.norm == NormPlace::Post,
            classes,
        }
    }

    /// Logits `[batch, classes]` from token ids `[batch, length]` (as
    /// floats, the way batches arrive).
    pub fn forward(&self, tokens: Tensor<B, 2>, ac: &Autocast) -> Tensor<B, 2> {
        let [n, t] = tokens.dims();
        let d = self.embed.dims()[1];
        let ids: Tensor<B, 1, Int> = tokens.int().reshape([n * t]);
        let x = self.embed.val().select(0, ids).reshape([n, t, d]);
        let pos = self.pos.val().slice([0..t, 0..d]).reshape([1, t, d]);
        let mut x = x + pos.expand([n, t, d]);
        for b in &self.blocks {
            x = self.block(b, x, ac);
        }
        if let Some(ln) = &self.ln_final {
            x = ac.layer_norm(ln, x);
        }
        let last = x.slice([0..n, t - 1..t, 0..d]).reshape([n, d]);
        match &self.unembed {
            Some(u) => ac.linear(u, last),
            None => {
                let e = self.embed.val().slice([0..self.classes, 0..d]);
                ac.matmul(last, e.transpose())
            }
        }
    }

    fn block(&self, b: &Block<B>, x: Tensor<B, 3>, ac: &Autocast) -> Tensor<B, 3> {
        let norm = |ln: &Option<LayerNorm<B>>, x: Tensor<B, 3>| match ln {
            Some(ln) => ac.layer_norm(ln, x),
            None => x,
        };
        if self.post_norm {
            let x = norm(&b.ln1, ac.add(x.clone(), self.attention(b, x, ac)));
            norm(&b.ln2, ac.add(x.clone(), self.mlp(b, x, ac)))
        } else {
            let x = ac.add(x.clone(), self.attention(b, norm(&b.ln1, x), ac));
            ac.add(x.clone(), self.mlp(b, norm(&b.ln2, x), ac))
        }
    }

    fn mlp(&self, b: &Block<B>, x: Tensor<B, 3>, ac: &Autocast) -> Tensor<B, 3> {
        let h = ac.linear(&b.fc1, x);
        let h = if self.gelu { ac.gelu(h) } else { ac.relu(h) };
        ac.linear(&b.fc2, h)
    }

    /// Multi-head self-attention: scores `q k^T / sqrt(d_head)` in the
    /// compute dtype, softmax in fp32, then `p v` in the compute dtype.
    pub fn attention(&self, b: &Block<B>, x: Tensor<B, 3>, ac: &Autocast) -> Tensor<B, 3> {
        let [n, t, d] = x.dims();
        let (h, dh) = (self.heads, d / self.heads);
        let split = |y: Tensor<B, 3>| y.reshape([n, t, h, dh]).swap_dims(1, 2);
        let q = split(ac.linear(&b.wq, x.clone()));
        let k = split(ac.linear(&b.wk, x.clone()));
        let v = split(ac.linear(&b.wv, x));
        let scores = ac
            .matmul(q, k.swap_dims(2, 3))
            .mul_scalar(1.0 / (dh as f64).sqrt());
        let scores = if self.causal {
            let mask = causal_mask::<B>(t, &scores.device()).expand([n, h, t, t]);
            scores.mask_fill(mask, f32::NEG_INFINITY)
        } else {
            scores
        };
        let p = ac.softmax(scores, 3);
        let out = ac.matmul(p, v).swap_dims(1, 2).reshape([n, t, d]);
        ac.linear(&b.wo, out)
    }

    /// The first block, for tests.
    pub fn first_block(&self) -> &Block<B> {
        &self.blocks[0]
    }
}

/// `[1, 1, t, t]`, true above the diagonal: a query may not see later keys.
fn causal_mask<B: Backend>(t: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let v: Vec<bool> = (0..t * t).map(|i| i % t > i / t).collect();
    Tensor::from_data(TensorData::new(v, [1, 1, t, t]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use greentrain_amp::Precision;

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
        };
        let m = Transformer::<F>::new(&mut init, spec, 10, 4, 10);
        let (n, t, d, h, dh) = (2, 4, 8, 2, 4);
        let xs: Vec<f32> = (0..n * t * d)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let x = Tensor::<F, 3>::from_data(TensorData::new(xs.clone(), [n, t, d]), &dev);
        let ac = Autocast::new(Precision::Fp32);
        let got: Vec<f32> = m
            .attention(m.first_block(), x, &ac)
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
}

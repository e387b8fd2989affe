//! A CIFAR-style ResNet (He et al. 2016, section 4.2): a 3x3 stem, three
//! stages of basic blocks at `width`, 2 x `width` and 4 x `width` channels
//! (strides 1, 2, 2; a 1x1 convolution on the shortcut where the shape
//! changes), global average pooling and a linear layer; `depth` = 6n + 2.
//! Batch norm runs in fp32 under autocast, parameters and running
//! statistics alike, and the running statistics are part of the model
//! record, so checkpoints carry them.

use super::Init;
use burn::module::{Module, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use greentrain_amp::{batch_norm, batch_norm_add_relu, batch_norm_relu, MatmulBackend};

/// Two 3x3 convolutions with batch norm, and the shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    shortcut: Option<(Conv2d<B>, BatchNorm<B>)>,
}

/// The network.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem: Conv2d<B>,
    bn: BatchNorm<B>,
    blocks: Vec<BasicBlock<B>>,
    fc: Linear<B>,
    side: usize,
    channels_in: usize,
}

impl<'a, B: Backend> Init<'a, B> {
    /// Batch norm over `c` channels: scale 1, shift 0, running mean 0 and
    /// variance 1, PyTorch's momentum (0.1) and epsilon (1e-5).
    pub fn batch_norm(&mut self, c: usize) -> BatchNorm<B> {
        BatchNorm {
            gamma: self.constant(c, 1.0),
            beta: self.constant(c, 0.0),
            running_mean: RunningState::with_id(self.next_param_id(), self.filled(c, 0.0)),
            running_var: RunningState::with_id(self.next_param_id(), self.filled(c, 1.0)),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// A square convolution with a stride and no bias (batch norm follows).
    pub fn conv2d_strided(
        &mut self,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Conv2d<B> {
        let mut c = self.conv2d(c_in, c_out, kernel, pad);
        c.stride = [stride, stride];
        c.bias = None;
        c
    }
}

impl<B: MatmulBackend> ResNet<B> {
    /// A ResNet-`depth` (6n + 2) at base `width` for `side` x `side` images
    /// of `channels_in` channels.
    pub fn new(
        init: &mut Init<B>,
        depth: usize,
        width: usize,
        side: usize,
        channels_in: usize,
        classes: usize,
    ) -> Self {
        let n = (depth - 2) / 6;
        let mut blocks = Vec::new();
        let mut c_in = width;
        for (stage, stride) in [(1, 1), (2, 2), (4, 2)] {
            let c = width * stage;
            for i in 0..n {
                let s = if i == 0 { stride } else { 1 };
                let shortcut = (s != 1 || c_in != c)
                    .then(|| (init.conv2d_strided(c_in, c, 1, s, 0), init.batch_norm(c)));
                blocks.push(BasicBlock {
                    conv1: init.conv2d_strided(c_in, c, 3, s, 1),
                    bn1: init.batch_norm(c),
                    conv2: init.conv2d_strided(c, c, 3, 1, 1),
                    bn2: init.batch_norm(c),
                    shortcut,
                });
                c_in = c;
            }
        }
        Self {
            stem: init.conv2d_strided(channels_in, width, 3, 1, 1),
            bn: init.batch_norm(width),
            blocks,
            fc: init.linear(c_in, classes),
            side,
            channels_in,
        }
    }

    /// Logits from flattened images `[batch, channels x side x side]`.
    /// Batch norm through [`batch_norm`] (f32, greentrain's layout), its
    /// output f32, so the residual stream and the pooling are f32 too.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let x = x.reshape([n, self.channels_in, self.side, self.side]);
        let mut h = batch_norm_relu(&self.bn, self.stem.forward(x));
        for b in &self.blocks {
            let y = batch_norm_relu(&b.bn1, b.conv1.forward(h.clone()));
            let short = match &b.shortcut {
                Some((conv, bn)) => batch_norm(bn, conv.forward(h)),
                None => h,
            };
            h = batch_norm_add_relu(&b.bn2, b.conv2.forward(y), short);
        }
        let [_, c, _, _] = h.dims();
        let pooled = h.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.fc.forward(pooled)
    }
}

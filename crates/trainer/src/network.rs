//! What the run loop asks of a model: logits for a batch of flattened
//! samples. greentrain's own models (`model::Model`) and yours
//! (`own::OwnModel`) meet here.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

/// A model the run can train: logits from samples.
pub trait Network<B: Backend>: Module<B> {
    /// Logits `[rows, classes]` from samples `[batch, features]` (each
    /// sample flattened, as the dataset's `sample_shape` lays it out; rows
    /// is batch times the labels per sample). The run calls it on
    /// `greentrain_amp::Amp<B>` under its autocast policy, so plain Burn
    /// code gets mixed precision and greentrain's kernels.
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2>;
}

/// A [`Network`] on an autodiff backend whose evaluation copy (`valid()`,
/// without gradients) is a network too. Implemented for every such module.
pub trait Trainable<B: AutodiffBackend>: Network<B> + AutodiffModule<B> {
    /// The evaluation copy's type.
    type Eval: Network<B::InnerBackend>;
    /// The copy evaluation runs on.
    fn eval_copy(&self) -> Self::Eval;
}

impl<B, M> Trainable<B> for M
where
    B: AutodiffBackend,
    M: Network<B> + AutodiffModule<B>,
    M::InnerModule: Network<B::InnerBackend>,
{
    type Eval = M::InnerModule;
    fn eval_copy(&self) -> M::InnerModule {
        self.valid()
    }
}

/// Trainable parameters, PyTorch's `sum(p.numel() for p in
/// model.parameters())`: Burn's `num_params` also counts batch norm's
/// running statistics, which PyTorch keeps as buffers.
pub fn trainable_params<B: Backend, M: Module<B>>(m: &M) -> usize {
    let mut t = Count::default();
    m.visit(&mut t);
    t.count
}

#[derive(Default)]
struct Count {
    path: Vec<String>,
    count: usize,
}

impl<B: Backend> ModuleVisitor<B> for Count {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.path.last().is_some_and(|n| n.starts_with("running_")) {
            self.count += param.shape().num_elements();
        }
    }
}

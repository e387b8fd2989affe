//! `Amp<B>`: autocast as a backend decorator (the docs are on [`Amp`]).

mod kernels;
mod ops;
mod state;

use std::marker::PhantomData;

use burn::tensor::Tensor;
use burn_backend::tensor::{BoolTensor, FloatTensor, IntTensor, QuantizedTensor};
use burn_backend::{
    AutodiffBackend, Backend, BackendTypes, DType, DTypeUsageSet, ExecutionError, TensorData,
};
use greentrain_foreach::{AdamStep, ForeachBackend, Group, ScaleRule, ScaleState, SgdStep};
use greentrain_matmul::{MatmulBackend, MatmulKernel};

pub use kernels::use_kernels;
pub use ops::{rule, rules, Rule};
pub use state::{autocast, autocast_dtype, AutocastGuard};
pub(crate) use state::{compute_dtype, current, enter, State};

/// Autocast as a backend: `Amp<B>` runs whatever a model calls under the op
/// policy, so an unmodified `burn::nn` module gets mixed precision by a type
/// change alone (`Amp<Autodiff<Flex>>` instead of `Autodiff<Flex>`).
///
/// Place it **above** Autodiff. There it sees the ops the tensor API calls
/// (`linear`, `conv2d`, `softmax`, `layer_norm`, `attention`, `gelu`), and
/// its casts go through Autodiff's `float_cast`, whose backward casts the
/// gradient back: parameters stay f32 and so do their gradients. Below
/// Autodiff it would see only the pieces, and gradients would come back in
/// the compute dtype.
///
/// The policy is off until [`autocast`] turns it on for the current thread
/// (PyTorch's `with torch.autocast(...)`): outside it `Amp<B>` is `B`, except
/// that binary ops on two float dtypes promote to the wider one instead of
/// failing. Which op runs in which dtype: [`rule`] and `docs/amp-ops.md`.
///
/// ```
/// use burn::backend::{Autodiff, Flex};
/// use burn::nn::LinearConfig;
/// use burn::tensor::{activation, DType, Tensor};
/// use greentrain_amp::{autocast, Amp, Precision};
///
/// type B = Amp<Autodiff<Flex>>;
/// let device = Default::default();
/// let layer = LinearConfig::new(4, 3).init::<B>(&device);
/// let x = Tensor::<B, 2>::ones([2, 4], &device);
///
/// let _on = autocast(Precision::Fp16);
/// let y = layer.forward(x);                      // a product: f16
/// assert_eq!(y.dtype(), DType::F16);
/// let p = activation::softmax(y, 1);             // a softmax: f32
/// assert_eq!(p.dtype(), DType::F32);
/// let grads = p.sum().backward();
/// let g = layer.weight.grad(&grads).unwrap();    // master weights' gradient: f32
/// assert_eq!(g.dtype(), DType::F32);
/// ```
#[derive(Clone, Copy, Default, Debug)]
pub struct Amp<B>(PhantomData<B>);

impl<B: Backend> BackendTypes for Amp<B> {
    type Device = B::Device;
    type FloatTensorPrimitive = B::FloatTensorPrimitive;
    type FloatElem = B::FloatElem;
    type IntTensorPrimitive = B::IntTensorPrimitive;
    type IntElem = B::IntElem;
    type BoolTensorPrimitive = B::BoolTensorPrimitive;
    type BoolElem = B::BoolElem;
    type QuantizedTensorPrimitive = B::QuantizedTensorPrimitive;
}

// Every method forwards, defaulted ones included: `ad_enabled`'s default
// (false) would switch BatchNorm's training statistics and gradients off.
impl<B: Backend> Backend for Amp<B> {
    fn ad_enabled(device: &Self::Device) -> bool {
        B::ad_enabled(device)
    }

    fn memory_persistent_allocations<
        Output: Send,
        Input: Send,
        Func: Fn(Input) -> Output + Send,
    >(
        device: &Self::Device,
        input: Input,
        func: Func,
    ) -> Output {
        B::memory_persistent_allocations(device, input, func)
    }

    fn memory_cleanup(device: &Self::Device) {
        B::memory_cleanup(device)
    }

    /// The inner backend's name: records and messages name the hardware
    /// path, and the precision is recorded on its own.
    fn name(device: &Self::Device) -> String {
        B::name(device)
    }

    fn seed(device: &Self::Device, seed: u64) {
        B::seed(device, seed)
    }

    fn sync(device: &Self::Device) -> Result<(), ExecutionError> {
        B::sync(device)
    }

    fn staging<'a, Iter>(data: Iter, device: &Self::Device)
    where
        Iter: Iterator<Item = &'a mut TensorData>,
    {
        B::staging(data, device)
    }

    fn supports_dtype(device: &Self::Device, dtype: DType) -> bool {
        B::supports_dtype(device, dtype)
    }

    fn dtype_usage(device: &Self::Device, dtype: DType) -> DTypeUsageSet {
        B::dtype_usage(device, dtype)
    }

    fn device_count(type_id: u16) -> usize {
        B::device_count(type_id)
    }
}

/// `Amp<Autodiff<B>>` is an autodiff backend whose inner backend is
/// `Amp<B>`: evaluation on `model.valid()` runs under the same policy.
impl<B: AutodiffBackend> AutodiffBackend for Amp<B> {
    type InnerBackend = Amp<B::InnerBackend>;
    type Gradients = B::Gradients;

    fn backward(tensor: FloatTensor<Self>) -> Self::Gradients {
        B::backward(tensor)
    }

    fn grad(
        tensor: &FloatTensor<Self>,
        grads: &Self::Gradients,
    ) -> Option<FloatTensor<Self::InnerBackend>> {
        B::grad(tensor, grads)
    }

    fn grad_remove(
        tensor: &FloatTensor<Self>,
        grads: &mut Self::Gradients,
    ) -> Option<FloatTensor<Self::InnerBackend>> {
        B::grad_remove(tensor, grads)
    }

    fn grad_replace(
        tensor: &FloatTensor<Self>,
        grads: &mut Self::Gradients,
        grad: FloatTensor<Self::InnerBackend>,
    ) {
        B::grad_replace(tensor, grads, grad)
    }

    fn inner(tensor: FloatTensor<Self>) -> FloatTensor<Self::InnerBackend> {
        B::inner(tensor)
    }

    fn int_inner(tensor: IntTensor<Self>) -> IntTensor<Self::InnerBackend> {
        B::int_inner(tensor)
    }

    fn bool_inner(tensor: BoolTensor<Self>) -> BoolTensor<Self::InnerBackend> {
        B::bool_inner(tensor)
    }

    fn q_inner(tensor: QuantizedTensor<Self>) -> QuantizedTensor<Self::InnerBackend> {
        B::q_inner(tensor)
    }

    fn from_inner(tensor: FloatTensor<Self::InnerBackend>) -> FloatTensor<Self> {
        B::from_inner(tensor)
    }

    fn int_from_inner(tensor: IntTensor<Self::InnerBackend>) -> IntTensor<Self> {
        B::int_from_inner(tensor)
    }

    fn bool_from_inner(tensor: BoolTensor<Self::InnerBackend>) -> BoolTensor<Self> {
        B::bool_from_inner(tensor)
    }

    fn q_from_inner(tensor: QuantizedTensor<Self::InnerBackend>) -> QuantizedTensor<Self> {
        B::q_from_inner(tensor)
    }
}

/// greentrain's foreach steps (loss scaler, optimizers) on `Amp<B>` are
/// `B`'s: its fused kernels on the CubeCL backends, outside the policy.
impl<B: ForeachBackend> ForeachBackend for Amp<B> {
    fn foreach_unscale_check(
        grads: Vec<Tensor<Self, 1>>,
        inv_scale: Tensor<Self, 1>,
    ) -> (Vec<Tensor<Self, 1>>, Tensor<Self, 1>) {
        let (grads, found) = B::foreach_unscale_check(downs(grads), down(inv_scale));
        (ups(grads), up(found))
    }

    fn amp_update_scale(
        state: ScaleState<Self>,
        found: Tensor<Self, 1>,
        rule: &ScaleRule,
    ) -> ScaleState<Self> {
        let inner = ScaleState {
            scale: down(state.scale),
            tracker: down(state.tracker),
            skipped: down(state.skipped),
        };
        let s = B::amp_update_scale(inner, down(found), rule);
        ScaleState {
            scale: up(s.scale),
            tracker: up(s.tracker),
            skipped: up(s.skipped),
        }
    }

    fn foreach_adam(
        step: &AdamStep<Self>,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        let step = AdamStep {
            lr: step.lr,
            beta1: step.beta1,
            beta2: step.beta2,
            epsilon: step.epsilon,
            weight_decay: step.weight_decay,
            decoupled: step.decoupled,
            steps: down(step.steps.clone()),
        };
        up_group(B::foreach_adam(
            &step,
            down_group(group),
            downs(grads),
            skip.map(down),
        ))
    }

    fn foreach_sgd(
        step: &SgdStep,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        up_group(B::foreach_sgd(
            step,
            down_group(group),
            downs(grads),
            skip.map(down),
        ))
    }
}

/// Products through `B`'s chosen kernels (greentrain-matmul), as `B` routes
/// them; the policy has cast the inputs already where it applies.
impl<B: MatmulBackend> MatmulBackend for Amp<B> {
    fn gt_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self> {
        B::gt_matmul(lhs, rhs, kernel)
    }

    fn gt_choice(
        device: &Self::Device,
        dtype: DType,
        kernel: MatmulKernel,
    ) -> Option<&'static str> {
        B::gt_choice(device, dtype, kernel)
    }

    fn gt_split_sums(device: &Self::Device) -> bool {
        B::gt_split_sums(device)
    }

    fn gt_routes(device: &Self::Device, dtype: DType, kernel: MatmulKernel) -> bool {
        B::gt_routes(device, dtype, kernel)
    }
}

/// The same tensor seen as `B`'s (the primitives are `B`'s own).
fn down<B: Backend, const D: usize>(t: Tensor<Amp<B>, D>) -> Tensor<B, D> {
    Tensor::from_primitive(ops::unwrap_primitive(t.into_primitive()))
}

fn up<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<Amp<B>, D> {
    Tensor::from_primitive(ops::rewrap_primitive(t.into_primitive()))
}

fn downs<B: Backend>(ts: Vec<Tensor<Amp<B>, 1>>) -> Vec<Tensor<B, 1>> {
    ts.into_iter().map(down).collect()
}

fn ups<B: Backend>(ts: Vec<Tensor<B, 1>>) -> Vec<Tensor<Amp<B>, 1>> {
    ts.into_iter().map(up).collect()
}

fn down_group<B: Backend>(g: Group<Amp<B>>) -> Group<B> {
    Group {
        params: downs(g.params),
        first: g.first.map(downs),
        second: g.second.map(downs),
    }
}

fn up_group<B: Backend>(g: Group<B>) -> Group<Amp<B>> {
    Group {
        params: ups(g.params),
        first: g.first.map(ups),
        second: g.second.map(ups),
    }
}

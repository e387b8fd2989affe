//! The foreach operations under Burn's fusion (`Fusion<B>`, what
//! `burn::backend::Wgpu` and `Cuda` are with the `fusion` feature): each is
//! one custom fusion operation whose execution runs the inner backend's
//! implementation (the kernels of `CubeBackend`) on the concrete tensors, the
//! way burn-vision registers its own operations. Fusion flushes the
//! element-wise work that produces the inputs, then launches the kernel.

use crate::{
    kernel_ready, reference, AdamStep, ForeachBackend, Group, ScaleRule, ScaleState, SgdStep,
};
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use std::marker::PhantomData;

/// What a registered operation runs, with the host values it needs.
#[derive(Clone, Debug)]
enum Kind {
    UnscaleCheck,
    UpdateScale(ScaleRule),
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        epsilon: f64,
        weight_decay: f64,
        decoupled: bool,
        state: bool,
        skip: bool,
    },
    Sgd {
        step: SgdStep,
        state: bool,
        skip: bool,
    },
}

#[derive(Clone, Debug)]
struct ForeachOp<B> {
    desc: CustomOpIr,
    kind: Kind,
    _b: PhantomData<fn() -> B>,
}

type Runtime<B> = <B as FusionBackend>::FusionRuntime;

impl<B: FusionBackend + ForeachBackend> Operation<Runtime<B>> for ForeachOp<B> {
    fn execute(&self, handles: &mut HandleContainer<<Runtime<B> as FusionRuntime>::FusionHandle>) {
        let mut ins: Vec<Tensor<B, 1>> = self
            .desc
            .inputs
            .iter()
            .map(|ir| {
                Tensor::from_primitive(TensorPrimitive::Float(handles.get_float_tensor::<B>(ir)))
            })
            .collect();
        let outs = match &self.kind {
            Kind::UnscaleCheck => {
                let inv = ins.pop().expect("the inverse scale is the last input");
                let (mut grads, found) = B::foreach_unscale_check(ins, inv);
                grads.push(found);
                grads
            }
            Kind::UpdateScale(rule) => {
                let found = ins.pop().expect("found is the last input");
                let s = B::amp_update_scale(ScaleState::from_outputs(ins), found, rule);
                vec![s.scale, s.tracker, s.skipped]
            }
            Kind::Adam {
                lr,
                beta1,
                beta2,
                epsilon,
                weight_decay,
                decoupled,
                state,
                skip,
            } => {
                let skip = skip.then(|| ins.pop().expect("skip flag"));
                let steps = ins.pop().expect("step count");
                let step = AdamStep {
                    lr: *lr,
                    beta1: *beta1,
                    beta2: *beta2,
                    epsilon: *epsilon,
                    weight_decay: *weight_decay,
                    decoupled: *decoupled,
                    steps,
                };
                let (group, grads) = split_group(ins, *state, true);
                flatten(B::foreach_adam(&step, group, grads, skip))
            }
            Kind::Sgd { step, state, skip } => {
                let skip = skip.then(|| ins.pop().expect("skip flag"));
                let (group, grads) = split_group(ins, *state, false);
                flatten(B::foreach_sgd(step, group, grads, skip))
            }
        };
        for (ir, t) in self.desc.outputs.iter().zip(outs) {
            handles.register_float_tensor::<B>(&ir.id, t.into_primitive().tensor());
        }
    }
}

/// Inputs laid out as params, grads, then the state lists when `state`.
fn split_group<B: burn::tensor::backend::Backend>(
    mut ins: Vec<Tensor<B, 1>>,
    state: bool,
    adam: bool,
) -> (Group<B>, Vec<Tensor<B, 1>>) {
    let lists = 2 + usize::from(state) * (1 + usize::from(adam));
    let n = ins.len() / lists;
    let mut rest = ins.split_off(n);
    let grads: Vec<_> = rest.drain(..n).collect();
    let first = state.then(|| rest.drain(..n).collect());
    let second = (state && adam).then(|| rest.drain(..n).collect());
    let group = Group {
        params: ins,
        first,
        second,
    };
    (group, grads)
}

/// Outputs laid out as params, then first, then second state.
fn flatten<B: burn::tensor::backend::Backend>(g: Group<B>) -> Vec<Tensor<B, 1>> {
    let mut out = g.params;
    out.extend(g.first.into_iter().flatten());
    out.extend(g.second.into_iter().flatten());
    out
}

/// Registers one operation over `inputs` with `outputs` f32 results of the
/// given lengths, and returns them.
fn register<B: FusionBackend + ForeachBackend>(
    name: &'static str,
    kind: Kind,
    inputs: Vec<Tensor<Fusion<B>, 1>>,
    outputs: Vec<usize>,
) -> Vec<Tensor<Fusion<B>, 1>> {
    let inputs: Vec<FusionTensor<Runtime<B>>> = inputs
        .into_iter()
        .map(|t| t.into_primitive().tensor())
        .collect();
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outs: Vec<TensorIr> = outputs
        .into_iter()
        .map(|n| TensorIr::uninit(client.create_empty_handle(), Shape::new([n]), DType::F32))
        .collect();
    let ins: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(name, &ins, &outs);
    let op = ForeachOp::<B> {
        desc: desc.clone(),
        kind,
        _b: PhantomData,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .into_iter()
        .map(|t| Tensor::from_primitive(TensorPrimitive::Float(t)))
        .collect()
}

fn lens<B: burn::tensor::backend::Backend>(ts: &[Tensor<B, 1>]) -> Vec<usize> {
    ts.iter().map(|t| t.dims()[0]).collect()
}

impl<B: FusionBackend + ForeachBackend> ForeachBackend for Fusion<B> {
    fn foreach_unscale_check(
        grads: Vec<Tensor<Self, 1>>,
        inv_scale: Tensor<Self, 1>,
    ) -> (Vec<Tensor<Self, 1>>, Tensor<Self, 1>) {
        if !kernel_ready(&[&grads]) || inv_scale.dtype() != DType::F32 {
            return reference::unscale_check(grads, inv_scale);
        }
        let mut outputs = lens(&grads);
        outputs.push(1);
        let mut inputs = grads;
        inputs.push(inv_scale);
        let mut out = register::<B>(
            "greentrain_unscale_check",
            Kind::UnscaleCheck,
            inputs,
            outputs,
        );
        let found = out.pop().expect("the flag is the last output");
        (out, found)
    }

    fn amp_update_scale(
        state: ScaleState<Self>,
        found: Tensor<Self, 1>,
        rule: &ScaleRule,
    ) -> ScaleState<Self> {
        if !state.kernel_ready(&found) {
            return reference::update_scale(state, found, rule);
        }
        let inputs = vec![state.scale, state.tracker, state.skipped, found];
        let out = register::<B>(
            "greentrain_update_scale",
            Kind::UpdateScale(*rule),
            inputs,
            vec![1; 3],
        );
        ScaleState::from_outputs(out)
    }

    fn foreach_adam(
        step: &AdamStep<Self>,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        let state = group.first.is_some() && group.second.is_some();
        let mut lists = vec![&group.params[..], &grads[..]];
        if let (true, Some(m), Some(v)) = (state, &group.first, &group.second) {
            lists.extend([&m[..], &v[..]]);
        }
        let scalars_f32 = [&step.steps]
            .into_iter()
            .chain(skip.as_ref())
            .all(|s| s.dims() == [1] && s.dtype() == DType::F32);
        if !kernel_ready(&lists) || !scalars_f32 {
            return reference::adam(step, group, grads, skip);
        }
        let n = group.params.len();
        let len = lens(&group.params);
        let outputs: Vec<usize> = len.iter().chain(&len).chain(&len).copied().collect();
        let mut inputs = group.params;
        inputs.extend(grads);
        if state {
            inputs.extend(group.first.into_iter().flatten());
            inputs.extend(group.second.into_iter().flatten());
        }
        inputs.push(step.steps.clone());
        let has_skip = skip.is_some();
        inputs.extend(skip);
        let kind = Kind::Adam {
            lr: step.lr,
            beta1: step.beta1,
            beta2: step.beta2,
            epsilon: step.epsilon,
            weight_decay: step.weight_decay,
            decoupled: step.decoupled,
            state,
            skip: has_skip,
        };
        let mut out = register::<B>("greentrain_adam", kind, inputs, outputs);
        let second = out.split_off(2 * n);
        let first = out.split_off(n);
        Group {
            params: out,
            first: Some(first),
            second: Some(second),
        }
    }

    fn foreach_sgd(
        step: &SgdStep,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        let momentum = step.momentum.is_some();
        let state = momentum && group.first.is_some();
        let mut lists = vec![&group.params[..], &grads[..]];
        if let (true, Some(b)) = (state, &group.first) {
            lists.push(&b[..]);
        }
        if !kernel_ready(&lists) || skip.as_ref().is_some_and(|s| s.dtype() != DType::F32) {
            return reference::sgd(step, group, grads, skip);
        }
        let n = group.params.len();
        let len = lens(&group.params);
        let outputs: Vec<usize> = if momentum {
            len.iter().chain(&len).copied().collect()
        } else {
            len
        };
        let mut inputs = group.params;
        inputs.extend(grads);
        if state {
            inputs.extend(group.first.into_iter().flatten());
        }
        let has_skip = skip.is_some();
        inputs.extend(skip);
        let kind = Kind::Sgd {
            step: *step,
            state,
            skip: has_skip,
        };
        let mut out = register::<B>("greentrain_sgd", kind, inputs, outputs);
        let first = momentum.then(|| out.split_off(n));
        Group {
            params: out,
            first,
            second: None,
        }
    }
}

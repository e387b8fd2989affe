//! SGD, Adam and AdamW with all of their state on the device, the step count
//! included, so that a step can be skipped by a device-side select.
//!
//! Burn's optimizers keep Adam's step count on the host (it drives the bias
//! correction), so skipping an overflowed fp16 step without reading the
//! overflow flag back would advance it. PyTorch's fused and capturable
//! optimizers solve this the same way: `found_inf` stays on the device and
//! the kernels keep the old values where it is set.
//!
//! The arithmetic is greentrain-foreach's (Burn's `Sgd`, `Adam` and `AdamW`:
//! L2 weight decay for SGD and Adam, decoupled for AdamW; Burn's epsilon
//! placement). By default a step is one foreach call over every parameter
//! (one kernel launch per group of tensors on the CubeCL backends, as
//! PyTorch's `foreach` optimizers); `with_foreach(false)` steps each
//! parameter on its own, in tensor ops, as greentrain did before.

use crate::policy::float_dtype;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Tensor};
use greentrain_foreach::{reference, AdamStep, ForeachBackend, Group, SgdStep};
use std::collections::HashMap;

/// Which optimizer, with its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerSpec {
    /// SGD with optional heavy-ball momentum (no dampening, not Nesterov)
    /// and L2 weight decay.
    Sgd {
        momentum: Option<f64>,
        weight_decay: f64,
    },
    /// Adam with L2 weight decay added to the gradient.
    Adam {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
        weight_decay: f64,
    },
}

impl OptimizerSpec {
    /// The name stored in records, so a record is never loaded into another
    /// kind of optimizer.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerSpec::Sgd { momentum: None, .. } => "sgd",
            OptimizerSpec::Sgd { .. } => "momentum",
            OptimizerSpec::Adam { .. } => "adam",
            OptimizerSpec::AdamW { .. } => "adamw",
        }
    }
}

/// Per-parameter state, flattened: momentum buffer or (m, v).
#[derive(Clone, Debug)]
struct Slot<B: Backend> {
    first: Tensor<B, 1>,
    second: Option<Tensor<B, 1>>,
}

/// The saved form: name, step count, and (parameter id, first, second).
pub type OptimizerRecord<B> = (
    String,
    Tensor<B, 1>,
    Vec<(String, Tensor<B, 1>, Option<Tensor<B, 1>>)>,
);

/// An optimizer whose state never leaves the device.
#[derive(Clone, Debug)]
pub struct DeviceOptimizer<B: AutodiffBackend> {
    spec: OptimizerSpec,
    /// Optimizer steps taken (skipped ones not counted), as an f32 on the
    /// device: exact up to 2^24 steps.
    steps: Tensor<B::InnerBackend, 1>,
    slots: HashMap<ParamId, Slot<B::InnerBackend>>,
    /// One foreach call for all parameters, or one per parameter.
    foreach: bool,
}

/// One parameter's inputs to a step, flattened.
struct Entry<B: Backend> {
    id: ParamId,
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    slot: Option<Slot<B>>,
}

impl<B: AutodiffBackend> DeviceOptimizer<B> {
    /// A fresh optimizer on `device`, stepping all parameters at once.
    pub fn new(spec: OptimizerSpec, device: &burn::tensor::Device<B::InnerBackend>) -> Self {
        Self {
            spec,
            steps: Tensor::zeros([1], device),
            slots: HashMap::new(),
            foreach: true,
        }
    }

    /// `false`: tensor ops per parameter (the launches greentrain made
    /// before the foreach kernels; for comparison).
    pub fn with_foreach(mut self, on: bool) -> Self {
        self.foreach = on;
        self
    }

    /// Whether a step is one foreach call over all parameters.
    pub fn is_foreach(&self) -> bool {
        self.foreach
    }

    /// The state to save.
    pub fn to_record(&self) -> OptimizerRecord<B::InnerBackend> {
        let mut slots: Vec<_> = self
            .slots
            .iter()
            .map(|(id, s)| (id.serialize(), s.first.clone(), s.second.clone()))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        (self.spec.name().to_string(), self.steps.clone(), slots)
    }

    /// Restores saved state; refuses a record of another optimizer.
    /// A record from a file is untrusted: the step count must be one value,
    /// every id a parameter id, and each slot hold the state this optimizer
    /// keeps (Adam two equal-length vectors, momentum one, plain SGD none).
    /// [`DeviceOptimizer::check_for`] then matches it to the model.
    pub fn load_record(mut self, record: OptimizerRecord<B::InnerBackend>) -> Result<Self, String> {
        let (name, steps, slots) = record;
        if name != self.spec.name() {
            return Err(format!(
                "the checkpoint holds {name} state, but the config asks for {}",
                self.spec.name()
            ));
        }
        if steps.dims() != [1] {
            return Err(format!(
                "its step count has shape {:?}, not [1]",
                steps.dims()
            ));
        }
        let (keeps_first, keeps_second) = match self.spec {
            OptimizerSpec::Sgd { momentum, .. } => (momentum.is_some(), false),
            _ => (true, true),
        };
        let mut restored = HashMap::with_capacity(slots.len());
        for (id, first, second) in slots {
            let pid = ParamId::try_deserialize(&id)
                .ok_or_else(|| format!("its state names an invalid parameter id {id:?}"))?;
            let shape_ok = second
                .as_ref()
                .is_none_or(|s| s.dims() == first.dims() && s.dtype() == first.dtype());
            if !keeps_first || second.is_some() != keeps_second || !shape_ok {
                return Err(format!(
                    "its state for parameter {id} is not {} state",
                    self.spec.name()
                ));
            }
            if restored.insert(pid, Slot { first, second }).is_some() {
                return Err(format!("it holds two states for parameter {id}"));
            }
        }
        self.steps = steps;
        self.slots = restored;
        Ok(self)
    }

    /// Whether the restored state fits `module`: every slot belongs to one
    /// of its parameters and has that parameter's length and dtype.
    pub fn check_for<M: AutodiffModule<B>>(&self, module: &M) -> Result<(), String> {
        let mut sizes = Sizes::<B> {
            of: HashMap::new(),
            _b: std::marker::PhantomData,
        };
        module.visit(&mut sizes);
        for (id, slot) in &self.slots {
            let found = (slot.first.dims()[0], slot.first.dtype());
            match sizes.of.get(id) {
                None => {
                    return Err(format!(
                        "its state names parameter {id}, which the model does not have"
                    ))
                }
                Some(&want) if want != found => {
                    return Err(format!(
                        "its state for parameter {id} has {} {:?} values, the parameter {} {:?}",
                        found.0, found.1, want.0, want.1
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Each float parameter's length and dtype.
struct Sizes<B: AutodiffBackend> {
    of: HashMap<ParamId, (usize, burn::tensor::DType)>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Sizes<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        self.of
            .insert(param.id, (t.shape().num_elements(), t.dtype()));
    }
}

impl<B: AutodiffBackend> DeviceOptimizer<B>
where
    B::InnerBackend: ForeachBackend,
{
    /// One step at learning rate `lr`. Where `skip` (a one-element device
    /// bool) is true, parameters, moments and the step count keep their old
    /// values bit for bit; nothing is read back either way.
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
        skip: Option<Tensor<B::InnerBackend, 1, Bool>>,
    ) -> M {
        self.step_flagged(lr, module, grads, skip.map(|s| s.float()))
    }

    /// [`DeviceOptimizer::step`] with the skip as a one-element f32 flag
    /// (skip where above 0), as the scaler's check makes it.
    pub(crate) fn step_flagged<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
        skip: Option<Tensor<B::InnerBackend, 1>>,
    ) -> M {
        let steps = match &skip {
            Some(s) => self.steps.clone() + s.clone().neg().add_scalar(1.0),
            None => self.steps.clone().add_scalar(1.0),
        };
        let mut entries = Collect::<B> {
            grads: &mut grads,
            slots: &mut self.slots,
            out: Vec::new(),
        };
        module.visit(&mut entries);
        let entries = entries.out;
        let mut new_params = HashMap::with_capacity(entries.len());
        // Parameters with state and without (a first step) in two calls.
        let (with, without): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.slot.is_some());
        for group in [with, without].into_iter().filter(|g| !g.is_empty()) {
            let (ids, out) = self.run(lr, &steps, group, skip.clone());
            for (i, id) in ids.into_iter().enumerate() {
                new_params.insert(id, out.params[i].clone());
                let first = out.first.as_ref().map(|f| f[i].clone());
                let second = out.second.as_ref().map(|s| s[i].clone());
                if let Some(first) = first {
                    self.slots.insert(id, Slot { first, second });
                }
            }
        }
        let module = module.map(&mut Apply::<B> { new: new_params });
        self.steps = match &skip {
            Some(s) => steps.mask_where(s.clone().greater_elem(0.0), self.steps.clone()),
            None => steps,
        };
        module
    }

    /// One group's step: a foreach call (kernels where the backend has them)
    /// or the tensor-op reference, per parameter.
    fn run(
        &self,
        lr: f64,
        steps: &Tensor<B::InnerBackend, 1>,
        entries: Vec<Entry<B::InnerBackend>>,
        skip: Option<Tensor<B::InnerBackend, 1>>,
    ) -> (Vec<ParamId>, Group<B::InnerBackend>) {
        let state = entries.iter().all(|e| e.slot.is_some());
        let mut ids = Vec::with_capacity(entries.len());
        let (mut params, mut grads, mut first, mut second) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in entries {
            ids.push(e.id);
            params.push(e.param);
            grads.push(e.grad);
            if let Some(s) = e.slot {
                first.push(s.first);
                second.extend(s.second);
            }
        }
        let group = Group {
            params,
            first: state.then_some(first),
            second: (state && !second.is_empty()).then_some(second),
        };
        type Inner<B> = <B as AutodiffBackend>::InnerBackend;
        let out = match self.spec {
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
            } => {
                let step = SgdStep {
                    lr,
                    momentum,
                    weight_decay,
                };
                if self.foreach {
                    Inner::<B>::foreach_sgd(&step, group, grads, skip)
                } else {
                    reference::sgd(&step, group, grads, skip)
                }
            }
            OptimizerSpec::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            }
            | OptimizerSpec::AdamW {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => {
                let step = AdamStep {
                    lr,
                    beta1,
                    beta2,
                    epsilon,
                    weight_decay,
                    decoupled: matches!(self.spec, OptimizerSpec::AdamW { .. }),
                    steps: steps.clone(),
                };
                if self.foreach {
                    Inner::<B>::foreach_adam(&step, group, grads, skip)
                } else {
                    reference::adam(&step, group, grads, skip)
                }
            }
        };
        (ids, out)
    }
}

/// Takes every parameter that has a gradient, with its gradient (in the
/// parameter's dtype) and its state, in the module's order.
struct Collect<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    slots: &'a mut HashMap<ParamId, Slot<B::InnerBackend>>,
    out: Vec<Entry<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let p = param.val().inner().flatten::<1>(0, D - 1);
        let mut g = grad.flatten::<1>(0, D - 1);
        if g.dtype() != p.dtype() {
            g = g.cast(float_dtype(p.dtype()));
        }
        self.out.push(Entry {
            id: param.id,
            param: p,
            grad: g,
            slot: self.slots.remove(&param.id),
        });
    }
}

/// Puts the stepped values back into the module, in each parameter's shape.
struct Apply<B: AutodiffBackend> {
    new: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Apply<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(new) = self.new.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let mut out = Tensor::<B, D>::from_inner(new.reshape(tensor.shape()));
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

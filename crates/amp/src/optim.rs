//! SGD, Adam and AdamW with all of their state on the device, the step count
//! included, so that a step can be skipped by a device-side select.
//!
//! Burn's optimizers keep Adam's step count on the host (it drives the bias
//! correction), so skipping an overflowed fp16 step without reading the
//! overflow flag back would advance it. PyTorch's fused and capturable
//! optimizers solve this the same way: `found_inf` stays on the device and
//! the kernels keep the old values where it is set.
//!
//! The arithmetic follows Burn's `Sgd`, `Adam` and `AdamW` (L2 weight decay
//! for SGD and Adam, decoupled for AdamW; Burn's epsilon placement).

use crate::policy::float_dtype;
use burn::module::{AutodiffModule, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Tensor};
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
}

/// Per-step scalars on the device, shared by every parameter.
struct StepScalars<B: Backend> {
    /// Adam: `sqrt(1 - b2^t) / (1 - b1^t)` and `eps * sqrt(1 - b2^t)`.
    adam: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: AutodiffBackend> DeviceOptimizer<B> {
    /// A fresh optimizer on `device`.
    pub fn new(spec: OptimizerSpec, device: &burn::tensor::Device<B::InnerBackend>) -> Self {
        Self {
            spec,
            steps: Tensor::zeros([1], device),
            slots: HashMap::new(),
        }
    }

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
        let steps = match &skip {
            Some(s) => self.steps.clone() + s.clone().bool_not().float(),
            None => self.steps.clone().add_scalar(1.0),
        };
        let scalars = self.scalars(&steps);
        let mut mapper = StepMapper::<B> {
            spec: self.spec,
            lr,
            grads,
            skip,
            scalars,
            slots: &mut self.slots,
        };
        let module = module.map(&mut mapper);
        self.steps = match &mapper.skip {
            Some(s) => steps.mask_where(s.clone(), self.steps.clone()),
            None => steps,
        };
        module
    }

    fn scalars(&self, steps: &Tensor<B::InnerBackend, 1>) -> StepScalars<B::InnerBackend> {
        let (b1, b2, eps) = match self.spec {
            OptimizerSpec::Sgd { .. } => return StepScalars { adam: None },
            OptimizerSpec::Adam {
                beta1,
                beta2,
                epsilon,
                ..
            }
            | OptimizerSpec::AdamW {
                beta1,
                beta2,
                epsilon,
                ..
            } => (beta1, beta2, epsilon),
        };
        let device = steps.device();
        let pow =
            |b: f64| Tensor::<B::InnerBackend, 1>::full([1], b as f32, &device).powf(steps.clone());
        let bc2_sqrt = pow(b2).neg().add_scalar(1.0).sqrt();
        let bc1 = pow(b1).neg().add_scalar(1.0);
        let combined = bc2_sqrt.clone() / bc1;
        let eps_term = bc2_sqrt.mul_scalar(eps as f32);
        StepScalars {
            adam: Some((combined, eps_term)),
        }
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
    pub fn load_record(mut self, record: OptimizerRecord<B::InnerBackend>) -> Result<Self, String> {
        let (name, steps, slots) = record;
        if name != self.spec.name() {
            return Err(format!(
                "the checkpoint holds {name} state, but the config asks for {}",
                self.spec.name()
            ));
        }
        self.steps = steps;
        self.slots = slots
            .into_iter()
            .map(|(id, first, second)| (ParamId::deserialize(&id), Slot { first, second }))
            .collect();
        Ok(self)
    }
}

struct StepMapper<'a, B: AutodiffBackend> {
    spec: OptimizerSpec,
    lr: f64,
    grads: GradientsParams,
    skip: Option<Tensor<B::InnerBackend, 1, Bool>>,
    scalars: StepScalars<B::InnerBackend>,
    slots: &'a mut HashMap<ParamId, Slot<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for StepMapper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let p = tensor.inner().flatten::<1>(0, D - 1);
        let mut g = grad.flatten::<1>(0, D - 1);
        if g.dtype() != p.dtype() {
            g = g.cast(float_dtype(p.dtype()));
        }
        let n = p.dims()[0];
        let old = self.slots.remove(&id);
        let (new_p, slot) = self.update(p.clone(), g, old.clone());
        let (new_p, slot) = match &self.skip {
            Some(skip) => {
                let mask = skip.clone().expand([n]);
                let keep = |new: Tensor<B::InnerBackend, 1>, old: Tensor<B::InnerBackend, 1>| {
                    new.mask_where(mask.clone(), old)
                };
                let zeros = || Tensor::zeros([n], &p.device());
                let slot = slot.map(|s| {
                    let (of, os) = match old {
                        Some(o) => (o.first, o.second),
                        None => (zeros(), s.second.as_ref().map(|_| zeros())),
                    };
                    let second = match (s.second, os) {
                        (Some(s), Some(o)) => Some(keep(s, o)),
                        (s, _) => s,
                    };
                    Slot {
                        first: keep(s.first, of),
                        second,
                    }
                });
                (keep(new_p, p), slot)
            }
            None => (new_p, slot),
        };
        if let Some(slot) = slot {
            self.slots.insert(id, slot);
        }
        let mut out = Tensor::<B, D>::from_inner(new_p.reshape(shape));
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

impl<B: AutodiffBackend> StepMapper<'_, B> {
    /// The unmasked update of one flattened parameter.
    fn update(
        &self,
        p: Tensor<B::InnerBackend, 1>,
        g: Tensor<B::InnerBackend, 1>,
        old: Option<Slot<B::InnerBackend>>,
    ) -> (Tensor<B::InnerBackend, 1>, Option<Slot<B::InnerBackend>>) {
        let n = p.dims()[0];
        let zeros = || Tensor::<B::InnerBackend, 1>::zeros([n], &p.device());
        let lr = self.lr;
        match self.spec {
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
            } => {
                let g = l2(g, &p, weight_decay);
                let Some(mu) = momentum else {
                    return (p - g.mul_scalar(lr), None);
                };
                // The first buffer is the gradient itself, as in Burn and PyTorch.
                let buf = match old {
                    Some(o) => o.first.mul_scalar(mu as f32) + g,
                    None => g,
                };
                let new_p = p - buf.clone().mul_scalar(lr);
                (
                    new_p,
                    Some(Slot {
                        first: buf,
                        second: None,
                    }),
                )
            }
            OptimizerSpec::Adam {
                beta1,
                beta2,
                weight_decay,
                ..
            }
            | OptimizerSpec::AdamW {
                beta1,
                beta2,
                weight_decay,
                ..
            } => {
                let decoupled = matches!(self.spec, OptimizerSpec::AdamW { .. });
                let g = if decoupled {
                    g
                } else {
                    l2(g, &p, weight_decay)
                };
                let (m, v) = match old {
                    Some(Slot {
                        first,
                        second: Some(second),
                    }) => (first, second),
                    _ => (zeros(), zeros()),
                };
                let m = m.mul_scalar(beta1 as f32) + g.clone().mul_scalar((1.0 - beta1) as f32);
                let v = v.mul_scalar(beta2 as f32) + g.square().mul_scalar((1.0 - beta2) as f32);
                let (combined, eps_term) = self.scalars.adam.clone().expect("Adam scalars");
                let delta = (m.clone() * combined) / (v.clone().sqrt() + eps_term);
                let base = if decoupled && weight_decay > 0.0 {
                    p.mul_scalar((1.0 - lr * weight_decay) as f32)
                } else {
                    p
                };
                let new_p = base - delta.mul_scalar(lr);
                (
                    new_p,
                    Some(Slot {
                        first: m,
                        second: Some(v),
                    }),
                )
            }
        }
    }
}

fn l2<B: Backend>(g: Tensor<B, 1>, p: &Tensor<B, 1>, weight_decay: f64) -> Tensor<B, 1> {
    if weight_decay > 0.0 {
        g + p.clone().mul_scalar(weight_decay as f32)
    } else {
        g
    }
}

//! The convolution as one autodiff operation on `Autodiff<Flex>`, and on
//! Flex alone for evaluation: [`kernel`]'s forward and gradients.

use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::{ConvOptions, ModuleOps};
use burn::tensor::{bf16, f16, DType, Tensor, TensorData, TensorPrimitive};

use crate::add;
use crate::cast;
use crate::direct;
use crate::kernel::{self, Geometry};

/// The dtypes whose tensors the kernels read (as f32) and write back.
pub fn reads(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

#[derive(Debug)]
struct ShiftedConv;

/// What the backward reads of the input: the grid the forward built, kept
/// so that the weight gradient does not build it again, or, where the
/// forward built none (a shallow one), the input itself.
#[derive(Clone, Debug)]
enum Input {
    Grid(Arc<kernel::InputGrid>),
    Node(NodeId),
}

impl Backward<Flex, 2> for ShiftedConv {
    type State = (Input, DType, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (input, x_dtype, w_state, g) = ops.state;
        let w: FlexTensor = checkpointer.retrieve_node_output(w_state);
        let dy = floats(&dy);
        let dy_grid = std::cell::OnceCell::new();
        let dy_grid = || dy_grid.get_or_init(|| kernel::OutputGrad::new(&dy, &g));
        let dx = node_x
            .as_ref()
            .map(|_| kernel::input_grad(dy_grid(), &floats(&w), &g));
        let dw = node_w.as_ref().map(|_| match input {
            Input::Grid(grid) => kernel::weight_grad(&grid, dy_grid(), &g),
            Input::Node(id) => {
                let x: FlexTensor = checkpointer.retrieve_node_output(id);
                let x = floats(&x);
                match direct::applies(&g) {
                    true => direct::weight_grad(&x, &dy, &g),
                    false => kernel::weight_grad(&kernel::InputGrid::new(&x, &g), dy_grid(), &g),
                }
            }
        });
        let keys = [node_x.map(|n| key!(n)), node_w.map(|n| key!(n))];
        register(grads, keys, [dx, dw], &g, [x_dtype, w.dtype()]);
    }
}

/// Registers a convolution's input gradient (`[N, C_in, H, W]` in the
/// input's dtype; summed in parallel with one already there, [`add`]) and
/// weight gradient (`[C_out, C_in, Kh, Kw]` in the weight's), each where its
/// parent is tracked and it was computed.
pub(crate) fn register(
    grads: &mut Gradients,
    [node_x, node_w]: [Option<add::Key>; 2],
    [dx, dw]: [Option<Vec<f32>>; 2],
    g: &Geometry,
    [x_dtype, w_dtype]: [DType; 2],
) {
    let [kh, kw] = g.kernel;
    if let (Some(key), Some(dx)) = (node_x, dx) {
        let shape = [g.batch, g.c_in, g.height, g.width];
        add::accumulate(grads, key, tensor(dx, shape, x_dtype));
    }
    if let (Some(key), Some(dw)) = (node_w, dw) {
        let shape = [g.c_out, g.c_in, kh, kw];
        grads.register::<Flex>(key.node.id, tensor(dw, shape, w_dtype));
    }
}

/// The bias-free convolution of `x` with `w`, recorded for backward.
pub fn conv2d(
    x: Tensor<Autodiff<Flex>, 4>,
    w: Tensor<Autodiff<Flex>, 4>,
    options: ConvOptions<2>,
    g: Geometry,
) -> Tensor<Autodiff<Flex>, 4> {
    let x = x.into_primitive().tensor();
    let w = w.into_primitive().tensor();
    let dtype = x.primitive.dtype();
    let shallow = |x: FlexTensor, w: FlexTensor| match direct(&g, dtype) {
        true => output(&x, &w, &g),
        false => Flex::conv2d(x, w, None, options),
    };
    let y = match ShiftedConv
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) if g.shallow() => {
            let state = (
                Input::Node(prep.checkpoint(&x)),
                dtype,
                prep.checkpoint(&w),
                g,
            );
            prep.finish(state, shallow(x.primitive, w.primitive))
        }
        OpsKind::Tracked(mut prep) => {
            let grid = Arc::new(kernel::InputGrid::new(&floats(&x.primitive), &g));
            let y = kernel::forward(&grid, &floats(&w.primitive), &g);
            let state = (Input::Grid(grid), dtype, prep.checkpoint(&w), g);
            prep.finish(state, output_tensor(y, &g, dtype))
        }
        OpsKind::UnTracked(prep) if g.shallow() => prep.finish(shallow(x.primitive, w.primitive)),
        OpsKind::UnTracked(prep) => prep.finish(output(&x.primitive, &w.primitive, &g)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The same convolution on Flex itself (evaluation): no graph to record;
/// a [`Geometry::shallow`] one only where [`direct`] computes it.
pub fn conv2d_inner(x: Tensor<Flex, 4>, w: Tensor<Flex, 4>, g: Geometry) -> Tensor<Flex, 4> {
    let y = output(
        &x.into_primitive().tensor(),
        &w.into_primitive().tensor(),
        &g,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// Whether a shallow convolution's forward is [`direct::forward`]'s. In f32
/// it gives Flex's bits. 16-bit inputs it sums in f32 and rounds once, as
/// the training forward (and a GPU's products) does, where Flex sums them in
/// 16 bits one scalar at a time: a third of a ResNet-20 fp16 evaluation.
pub fn direct(g: &Geometry, dtype: DType) -> bool {
    reads(dtype) && direct::applies(g)
}

/// The convolution's output by [`kernel::forward`] (by [`direct::forward`]
/// for a shallow one), in `x`'s dtype.
fn output(x: &FlexTensor, w: &FlexTensor, g: &Geometry) -> FlexTensor {
    let y = match g.shallow() {
        true => direct::forward(&floats(x), &floats(w), g),
        false => kernel::forward(&kernel::InputGrid::new(&floats(x), g), &floats(w), g),
    };
    output_tensor(y, g, x.dtype())
}

/// The output values as a `[N, C_out, Ho, Wo]` tensor of `dtype`.
fn output_tensor(y: Vec<f32>, g: &Geometry, dtype: DType) -> FlexTensor {
    let [ho, wo] = g.out();
    tensor(y, [g.batch, g.c_out, ho, wo], dtype)
}

/// A tensor's elements in logical order as f32, borrowed when they already are.
pub(crate) fn floats(t: &FlexTensor) -> Cow<'_, [f32]> {
    if let Some(s) = t.as_slice::<f32>() {
        return Cow::Borrowed(s);
    }
    let t = t.to_contiguous();
    Cow::Owned(match t.dtype() {
        DType::F32 => t.as_slice::<f32>().expect("contiguous").to_vec(),
        DType::F16 => cast::convert(t.as_slice::<f16>().expect("contiguous"), cast::f16_into),
        DType::BF16 => widened(t.as_slice::<bf16>().expect("contiguous"), bf16::to_f32),
        other => unreachable!("conv2d routes only f32, f16 and bf16 here, not {other:?}"),
    })
}

fn widened<T: Copy>(values: &[T], f: fn(T) -> f32) -> Vec<f32> {
    values.iter().map(|v| f(*v)).collect()
}

/// f32 values as a Flex tensor of `dtype`.
pub(crate) fn tensor(v: Vec<f32>, shape: [usize; 4], dtype: DType) -> FlexTensor {
    FlexTensor::from_data(match dtype {
        DType::F16 => TensorData::new(cast::convert(&v, cast::f16_from), shape),
        DType::BF16 => TensorData::new(v.into_iter().map(bf16::from_f32).collect(), shape),
        _ => TensorData::new(v, shape),
    })
}

/// An f32 tensor's values in a contiguous buffer no one else holds, for an
/// operation to write over: its own where it already is, else a copy.
pub(crate) fn owned(t: FlexTensor) -> FlexTensor {
    let shape = t.layout().shape().clone();
    let n = shape.num_elements();
    if t.dtype() == DType::F32 && t.is_unique() && t.layout().contiguous_offsets() == Some((0, n)) {
        return t;
    }
    FlexTensor::from_data(TensorData::new(floats(&t).into_owned(), shape))
}

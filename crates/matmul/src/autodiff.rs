//! [`MatmulBackend`] under Burn's autodiff: the forward product and both
//! gradients (`dL = dC · Rᵀ`, `dR = Lᵀ · dC`, as Burn's own matmul backward
//! computes them) go through the inner backend's `gt_matmul`. Products of
//! rank other than 2 and backends with no kernel keep Burn's op.

use crate::{MatmulBackend, MatmulKernel};
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, TensorMetadata};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};

#[derive(Debug)]
struct Matmul(MatmulKernel);

impl<B: MatmulBackend> Backward<B, 2> for Matmul {
    type State = (Option<NodeId>, Option<NodeId>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let kernel = self.0;
        let (lhs, rhs) = ops.state;
        let lhs: Option<FloatTensor<B>> = lhs.map(|id| checkpointer.retrieve_node_output(id));
        let rhs: Option<FloatTensor<B>> = rhs.map(|id| checkpointer.retrieve_node_output(id));
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let rhs = B::float_transpose(rhs.expect("rhs kept for the lhs gradient"));
                B::gt_matmul(grad, rhs, kernel)
            },
            |grad| {
                let lhs = B::float_transpose(lhs.expect("lhs kept for the rhs gradient"));
                B::gt_matmul(lhs, grad, kernel)
            },
        );
    }
}

impl<B: MatmulBackend, C: CheckpointStrategy> MatmulBackend for Autodiff<B, C> {
    fn gt_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self> {
        let rank2 = lhs.shape().num_dims() == 2 && rhs.shape().num_dims() == 2;
        let device = B::float_device(&lhs.primitive);
        if !rank2 || !B::gt_routes(&device, lhs.dtype(), kernel) {
            return <Self as FloatTensorOps<Self>>::float_matmul(lhs, rhs);
        }
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match Matmul(kernel)
            .prepare::<C>([lhs.node.clone(), rhs.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                // Each gradient needs the other operand.
                let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
                let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
                prep.finish(
                    (lhs_state, rhs_state),
                    B::gt_matmul(lhs.primitive, rhs.primitive, kernel),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::gt_matmul(lhs.primitive, rhs.primitive, kernel))
            }
        }
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

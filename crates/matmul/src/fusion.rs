//! [`MatmulBackend`] under Burn's fusion: the product is one custom fusion
//! operation that runs the inner backend's kernel (Fusion flushes the work
//! that produces the inputs first), as burn-vision registers its ops.

use crate::{MatmulBackend, MatmulKernel};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use std::marker::PhantomData;

#[derive(Clone, Debug)]
struct MatmulOp<B> {
    desc: CustomOpIr,
    kernel: MatmulKernel,
    _b: PhantomData<fn() -> B>,
}

impl<B: FusionBackend + MatmulBackend> Operation<B::FusionRuntime> for MatmulOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([lhs, rhs], [out]) = self.desc.as_fixed();
        let lhs = handles.get_float_tensor::<B>(lhs);
        let rhs = handles.get_float_tensor::<B>(rhs);
        let product = B::gt_matmul(lhs, rhs, self.kernel);
        handles.register_float_tensor::<B>(&out.id, product);
    }
}

impl<B: FusionBackend + MatmulBackend> MatmulBackend for Fusion<B> {
    fn gt_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self> {
        let rank2 = lhs.shape.num_dims() == 2 && rhs.shape.num_dims() == 2;
        if !rank2 || lhs.dtype != rhs.dtype || !B::gt_routes(lhs.client.device(), lhs.dtype, kernel)
        {
            return <Self as burn::tensor::ops::FloatTensorOps<Self>>::float_matmul(lhs, rhs);
        }
        let client = lhs.client.clone();
        let streams = OperationStreams::with_inputs([&lhs, &rhs]);
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::new([lhs.shape[0], rhs.shape[1]]),
            lhs.dtype,
        );
        let desc = CustomOpIr::new("greentrain_matmul", &[lhs.into_ir(), rhs.into_ir()], &[out]);
        let op = MatmulOp::<B> {
            desc: desc.clone(),
            kernel,
            _b: PhantomData,
        };
        let mut outs = client.register(streams, OperationIr::Custom(desc), op);
        outs.pop().expect("one output")
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
}

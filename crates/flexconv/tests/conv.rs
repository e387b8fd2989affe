//! The routed convolution against Burn's on `Autodiff<Flex>` (outputs and
//! every gradient) and on Flex alone (outputs), at the shapes greentrain's
//! models use and at odd ones.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{FloatDType, Tensor, TensorData};
use greentrain_flexconv::{conv2d, conv2d_with, routes, ConvPath};

mod common;
use common::{data, values};

type B = Autodiff<Flex>;

fn tensor<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), &Default::default())
}

fn options(stride: usize, pad: usize) -> PaddedConvOptions<2> {
    PaddedConvOptions::asymmetric([stride; 2], [pad; 2], [pad; 2], [1, 1], 1)
}

struct Grads {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Option<Vec<f32>>,
}

/// Output and gradients of `sum(conv(x, w, b) * r)` with ours (on `path`)
/// or, for `None`, Burn's conv2d.
fn run(
    x: [usize; 4],
    w: [usize; 4],
    bias: bool,
    opts: PaddedConvOptions<2>,
    half: bool,
    path: Option<ConvPath>,
) -> Grads {
    let xt = tensor(x, 1).require_grad();
    let wt = tensor(w, 2).require_grad();
    let bt = bias.then(|| tensor([w[0]], 3).require_grad());
    let low = |t: Tensor<B, 4>| if half { t.cast(FloatDType::F16) } else { t };
    let (xl, wl) = (low(xt.clone()), low(wt.clone()));
    let bl = bt
        .clone()
        .map(|b| if half { b.cast(FloatDType::F16) } else { b });
    let y = match path {
        Some(path) => conv2d_with(path, xl, wl, bl, opts.clone()),
        None => module::conv2d(xl, wl, bl, opts.clone()),
    };
    let r = low(tensor(y.dims(), 4));
    let grads = (y.clone() * r).cast(FloatDType::F32).sum().backward();
    Grads {
        y: data(y),
        dx: data(xt.grad(&grads).unwrap()),
        dw: data(wt.grad(&grads).unwrap()),
        db: bt.map(|b| data(b.grad(&grads).unwrap())),
    }
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn check(
    x: [usize; 4],
    w: [usize; 4],
    bias: bool,
    stride: usize,
    pad: usize,
    half: bool,
    tol: f32,
) {
    let opts = options(stride, pad);
    compare(ConvPath::Native, x, w, bias, opts, half, tol);
}

/// `path`'s output and gradients against Burn's, within `tol` of the largest value.
fn compare(
    path: ConvPath,
    x: [usize; 4],
    w: [usize; 4],
    bias: bool,
    opts: PaddedConvOptions<2>,
    half: bool,
    tol: f32,
) {
    let ours = run(x, w, bias, opts.clone(), half, Some(path));
    // The gemm path in 16 bits is checked against Burn's f32: Burn's flex
    // conv2d panicked on f16 with a bias (a dtype mismatch in its storage).
    let reference_half = half && path == ConvPath::Native;
    let burn = run(x, w, bias, opts.clone(), reference_half, None);
    assert_eq!(ours.y.len(), burn.y.len(), "output sizes");
    let case = format!("{path:?} x {x:?} w {w:?} bias {bias} {opts:?} half {half}");
    for (name, a, b) in [
        ("y", &ours.y, &burn.y),
        ("dx", &ours.dx, &burn.dx),
        ("dw", &ours.dw, &burn.dw),
    ] {
        let e = max_rel(a, b);
        assert!(
            e <= tol,
            "{case}: {name} differs from Burn's by {e:e} of its largest value"
        );
    }
    if let (Some(a), Some(b)) = (&ours.db, &burn.db) {
        assert!(max_rel(a, b) <= tol, "{case}: bias gradient differs");
    }
}

#[test]
fn gradients_match_burns_at_resnet_lenet_and_odd_shapes() {
    check([4, 16, 12, 12], [16, 16, 3, 3], false, 1, 1, false, 1e-5); // ResNet block
    check([3, 1, 28, 28], [6, 1, 5, 5], true, 1, 2, false, 1e-5); // LeNet c1
    check([3, 6, 14, 14], [16, 6, 5, 5], true, 1, 0, false, 1e-5); // LeNet c3
    check([2, 3, 7, 5], [4, 3, 3, 2], false, 1, 1, false, 1e-5); // non-square
    check([1, 2, 4, 4], [3, 2, 4, 4], false, 1, 0, false, 1e-5); // kernel = image
    check([2, 1, 28, 28], [16, 1, 3, 3], false, 1, 1, false, 1e-5); // ResNet stem (direct)
    check([2, 2, 9, 37], [5, 2, 3, 3], true, 1, 1, false, 1e-5); // direct, 37 columns
    check([1, 4, 6, 5], [7, 4, 2, 1], false, 1, 0, false, 1e-5); // direct, 4 channels
    check([2, 2, 8, 8], [20, 2, 3, 3], true, 1, 1, false, 1e-5); // shallow, 20 outputs: Flex's forward
    check([2, 8, 5, 6], [4, 8, 1, 1], true, 1, 1, false, 1e-5); // padding wider than the kernel
    check([2, 4, 5, 5], [3, 4, 2, 3], false, 1, 2, false, 1e-5); // padding shared across columns, not rows
    check([48, 16, 14, 14], [16, 16, 3, 3], true, 1, 1, false, 1e-5); // many chunks and row groups
}

/// Strided convolutions as stride-1 ones over the input's phases stacked as channels.
#[test]
fn strided_gradients_match_burns() {
    check([4, 16, 16, 16], [32, 16, 3, 3], false, 2, 1, false, 1e-5); // ResNet stage 2
    check([2, 8, 9, 9], [12, 8, 3, 3], true, 2, 1, false, 1e-5); // odd image
    check([2, 8, 8, 8], [16, 8, 1, 1], false, 2, 0, false, 1e-5); // 1x1 shortcut
    check([2, 9, 11, 10], [5, 9, 5, 4], true, 3, 2, false, 1e-5); // stride 3, 5x4 kernel
    check([2, 9, 7, 7], [4, 9, 2, 2], false, 2, 0, false, 1e-5); // 2x2 kernel, stride 2
    check([2, 4, 10, 11], [3, 4, 2, 2], true, 3, 1, false, 1e-5); // a phase with no taps
    check([3, 5, 12, 12], [6, 5, 3, 3], true, 4, 2, false, 1e-5); // stride beyond the kernel
    check([2, 8, 10, 10], [8, 8, 3, 3], false, 2, 1, true, 2e-2); // f16
}

#[test]
fn half_precision_inputs_get_gradients_of_their_dtype() {
    // f16 in, f32 accumulation (Burn's flex accumulates in f16): within f16's resolution.
    check([4, 8, 10, 10], [8, 8, 3, 3], false, 1, 1, true, 2e-2);
}

#[test]
fn symmetric_undilated_convolutions_on_flex_are_routed() {
    let (x, w) = (tensor([2, 4, 8, 8], 1), tensor([4, 4, 3, 3], 2));
    assert!(routes(&x, &w, &options(1, 1)));
    assert!(
        routes(&x, &w, &options(2, 1)),
        "strided: as stride-1 phases"
    );
    let asym = PaddedConvOptions::asymmetric([1, 1], [1, 1], [0, 0], [1, 1], 1);
    assert!(!routes(&x, &w, &asym), "asymmetric padding");
    let dilated = PaddedConvOptions::asymmetric([1, 1], [1, 1], [1, 1], [2, 2], 1);
    assert!(!routes(&x, &w, &dilated), "dilated");
    for (x, w) in [([2, 4, 0, 8], [4, 4, 3, 3]), ([2, 0, 8, 8], [4, 0, 3, 3])] {
        let (x, w) = (tensor(x, 1), tensor(w, 2));
        assert!(!routes(&x, &w, &options(1, 1)), "empty: Burn's");
        let y = conv2d(x, w, None, options(1, 1));
        assert_eq!(y.dims()[0], 2);
    }
    let inner: Tensor<Flex, 4> = x.clone().inner();
    assert!(
        routes(&inner, &w.clone().inner(), &options(1, 1)),
        "Flex without autodiff (evaluation)"
    );
    // LeNet's first layer: 5 terms per product, the direct kernel's in f32
    // and in f16 (summed in f32 there, where Flex sums in f16).
    let (x1, w1) = (tensor([2, 1, 28, 28], 1), tensor([6, 1, 5, 5], 2));
    assert!(routes(&x1, &w1, &options(1, 2)), "training: the gradients");
    let (x1, w1) = (x1.inner(), w1.inner());
    assert!(
        routes(&x1, &w1, &options(1, 2)),
        "evaluation: direct in f32"
    );
    let (x1, w1) = (x1.cast(FloatDType::F16), w1.cast(FloatDType::F16));
    assert!(
        routes(&x1, &w1, &options(1, 2)),
        "evaluation: direct in f16"
    );
    // Shallow, but more channels than Flex's small-channel kernel takes.
    let (x5, w5) = (
        tensor([2, 5, 8, 8], 1).inner(),
        tensor([20, 5, 1, 1], 2).inner(),
    );
    assert!(!routes(&x5, &w5, &options(1, 0)), "evaluation: 1x1 shallow");
}

/// The shallow first layers' forward equals Flex's bit for bit, in training
/// (`Autodiff<Flex>`, with its gradients) and in evaluation (Flex alone):
/// LeNet-5's, ResNet's stem and odd ones (output widths past and short of
/// 16 columns, 4 input channels, output channels not a multiple of 4, a
/// kernel as large as the padded image, non-square kernels and padding).
#[test]
fn shallow_forwards_are_flexs_bits() {
    for (x, w, pad) in [
        ([3, 1, 28, 28], [6, 1, 5, 5], 2),  // LeNet c1
        ([2, 1, 28, 28], [16, 1, 3, 3], 1), // ResNet stem
        ([2, 2, 9, 37], [5, 2, 3, 3], 1),   // 37 columns: 16 + 16 + 5
        ([1, 4, 6, 5], [2, 4, 2, 1], 0),    // 4 channels, 2 x 1 kernel
        ([2, 1, 3, 3], [3, 1, 7, 7], 2),    // kernel = padded image
        ([1, 3, 11, 4], [7, 3, 2, 2], 1),   // 3 outputs past a block of 4
    ] {
        let opts = options(1, pad);
        let (xt, wt) = (tensor(x, 1), tensor(w, 2));
        assert!(routes(&xt, &wt, &opts), "{x:?} {w:?}");
        let burn = data(module::conv2d(xt.clone(), wt.clone(), None, opts.clone()));
        let ours = data(conv2d(xt.clone(), wt.clone(), None, opts.clone()));
        same_bits(&ours, &burn, &format!("training {x:?} {w:?}"));
        let (xi, wi) = (xt.inner(), wt.inner());
        assert!(routes(&xi, &wi, &opts));
        let inner = data(conv2d(xi.clone(), wi.clone(), None, opts.clone()));
        let flex = data(module::conv2d(xi, wi, None, opts));
        same_bits(&inner, &flex, &format!("evaluation {x:?} {w:?}"));
    }
}

/// A shallow first layer's f16 forward is the f32 forward of the same f16
/// values rounded once, as every other f16 convolution's here, in training
/// and in evaluation alike (Flex's sums f16 terms in f16, a rounding each).
#[test]
fn shallow_half_forwards_sum_in_f32_and_round_once() {
    let f16 = FloatDType::F16;
    for (x, w, pad) in [
        ([3, 1, 28, 28], [6, 1, 5, 5], 2),  // LeNet c1
        ([2, 1, 28, 28], [16, 1, 3, 3], 1), // ResNet stem
    ] {
        let opts = options(1, pad);
        let (xh, wh) = (tensor(x, 1).cast(f16), tensor(w, 2).cast(f16));
        let (xf, wf) = (xh.clone().inner(), wh.clone().inner());
        let wide = conv2d(
            xf.cast(FloatDType::F32),
            wf.cast(FloatDType::F32),
            None,
            opts.clone(),
        );
        let wide = data(wide.cast(f16));
        let eval = conv2d(xh.clone().inner(), wh.clone().inner(), None, opts.clone());
        assert_eq!(eval.dtype(), burn::tensor::DType::F16);
        same_bits(&data(eval), &wide, &format!("evaluation {x:?} {w:?}"));
        let train = conv2d(xh, wh, None, opts);
        same_bits(&data(train), &wide, &format!("training {x:?} {w:?}"));
    }
}

fn same_bits(a: &[f32], b: &[f32], case: &str) {
    assert_eq!(a.len(), b.len(), "{case}: sizes");
    let differ = a.iter().zip(b).filter(|(a, b)| a.to_bits() != b.to_bits());
    let (n, first) = (differ.clone().count(), differ.clone().next());
    assert_eq!(n, 0, "{case}: {n} values differ, the first {first:?}");
}

#[test]
fn evaluation_on_flex_alone_matches_burns_in_its_dtype() {
    for (x, w, stride, pad, bias) in [
        ([4, 16, 12, 12], [16, 16, 3, 3], 1, 1, false),
        ([3, 6, 14, 14], [16, 6, 5, 5], 1, 0, true),
        ([2, 4, 7, 5], [4, 4, 3, 2], 1, 1, true),
        ([4, 16, 15, 15], [32, 16, 3, 3], 2, 1, false), // ResNet's stride 2, stacked
        ([2, 8, 9, 9], [16, 8, 1, 1], 2, 0, true),      // 1x1 shortcut, one phase
        ([3, 1, 28, 28], [6, 1, 5, 5], 1, 2, true),     // LeNet c1, shallow
    ] {
        for (dtype, tol) in [(FloatDType::F32, 1e-5), (FloatDType::F16, 2e-2)] {
            let xt = tensor(x, 1).inner().cast(dtype);
            let wt = tensor(w, 2).inner().cast(dtype);
            let bt = bias.then(|| tensor([w[0]], 3).inner().cast(dtype));
            let opts = options(stride, pad);
            assert!(routes(&xt, &wt, &opts));
            let ours = conv2d(xt.clone(), wt.clone(), bt.clone(), opts.clone());
            let burn = module::conv2d(xt, wt, bt, opts);
            assert_eq!(ours.dtype(), burn.dtype());
            assert_eq!(ours.dims(), burn.dims());
            let e = max_rel(&data(ours), &data(burn));
            assert!(e <= tol, "x {x:?} w {w:?} {dtype:?}: {e:e}");
        }
    }
}

#[test]
fn gradients_are_the_same_bits_every_time() {
    // Many row groups, summed across threads: their order must not vary.
    let once = || {
        run(
            [64, 8, 16, 16],
            [8, 8, 3, 3],
            false,
            options(1, 1),
            false,
            Some(ConvPath::Native),
        )
    };
    let a = once();
    for _ in 0..3 {
        let b = once();
        assert_eq!(a.dw, b.dw);
        assert_eq!(a.dx, b.dx);
    }
}

#[test]
fn the_gemm_path_matches_burns_at_resnet_strided_and_odd_shapes() {
    let gemm = |x, w, bias, opts, half, tol| compare(ConvPath::Gemm, x, w, bias, opts, half, tol);
    let asym = PaddedConvOptions::asymmetric([1, 2], [1, 0], [0, 2], [1, 1], 1);
    let strided3 = PaddedConvOptions::asymmetric([3, 2], [1, 1], [1, 1], [1, 1], 1);
    for half in [false, true] {
        let tol = if half { 2e-2 } else { 1e-5 };
        gemm([3, 1, 12, 12], [4, 1, 3, 3], true, options(1, 1), half, tol); // ResNet stem
        gemm([2, 4, 9, 9], [5, 4, 3, 3], false, options(2, 1), half, tol); // stride 2, odd image
        gemm([2, 4, 8, 8], [6, 4, 1, 1], false, options(2, 0), half, tol); // 1x1 shortcut
        gemm([2, 3, 7, 5], [4, 3, 3, 2], true, asym.clone(), half, tol); // asymmetric
        gemm(
            [2, 3, 10, 7],
            [2, 3, 2, 3],
            false,
            strided3.clone(),
            half,
            tol,
        ); // strides 3 and 2
        gemm([1, 2, 4, 4], [3, 2, 4, 4], false, options(1, 0), half, tol); // kernel = image
    }
}

#[test]
fn the_gemm_path_leaves_dilated_and_grouped_convolutions_to_burn() {
    let dilated = PaddedConvOptions::asymmetric([1, 1], [2, 2], [2, 2], [2, 2], 1);
    let grouped = PaddedConvOptions::asymmetric([1, 1], [1, 1], [1, 1], [1, 1], 2);
    for (w, bias, opts) in [
        ([4, 4, 3, 3], true, dilated),
        ([4, 2, 3, 3], false, grouped),
    ] {
        compare(ConvPath::Gemm, [2, 4, 8, 8], w, bias, opts, false, 0.0);
    }
}

#[test]
fn the_gemm_path_in_batch_slices_gives_the_same_outputs_and_gradients() {
    // 5 images, views of 2 at a time (3 slices, the last of 1).
    let (x, w) = ([5, 3, 6, 6], [4, 3, 3, 3]);
    let per_image = 3 * 9 * 3 * 3 * 4; // channels x taps x output pixels (stride 2) x f32
    let opts = options(2, 1);
    let grads = |max_bytes: usize| {
        let xt = tensor(x, 1).require_grad();
        let wt = tensor(w, 2).require_grad();
        let y = greentrain_flexconv::gemm::conv2d_within(xt.clone(), wt.clone(), &opts, max_bytes)
            .unwrap();
        let g = (y.clone() * tensor(y.dims(), 4)).sum().backward();
        (
            data(y),
            data(xt.grad(&g).unwrap()),
            data(wt.grad(&g).unwrap()),
        )
    };
    let (whole, sliced) = (grads(usize::MAX), grads(2 * per_image));
    assert_eq!(whole.0.len(), 5 * 4 * 3 * 3);
    assert!(max_rel(&sliced.0, &whole.0) <= 1e-6, "outputs");
    assert!(max_rel(&sliced.1, &whole.1) <= 1e-6, "input gradients");
    assert!(max_rel(&sliced.2, &whole.2) <= 1e-6, "weight gradients");
}

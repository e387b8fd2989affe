//! The routed max pool against Burn's on `Autodiff<Flex>` (output and the
//! input's gradient, bit for bit) and on Flex alone (output): LeNet-5's
//! pools, overlapping windows, ties (ReLU's zeros), 16-bit inputs, ceil
//! mode where every window fits; padded and dilated pools stay Burn's.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module;
use burn::tensor::{FloatDType, Tensor, TensorData};
use greentrain_flexconv::max_pool2d;

mod common;

type B = Autodiff<Flex>;

/// [`common::values`] with every third one 0 (ties, as after a ReLU).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut v = common::values(n, seed);
    v.iter_mut().step_by(3).for_each(|x| *x = 0.0);
    v
}

type Args = ([usize; 2], [usize; 2], [usize; 2], [usize; 2], bool);

/// Output and the input's gradient of `sum(pool(x) * r)`, `ours` or Burn's.
fn run(shape: [usize; 4], a: Args, half: bool, ours: bool) -> (Vec<f32>, Vec<f32>) {
    let dev = Default::default();
    let n = shape.iter().product();
    let mut x = Tensor::<B, 4>::from_data(TensorData::new(values(n, 1), shape), &dev);
    if half {
        x = x.cast(FloatDType::F16);
    }
    let x = x.require_grad();
    let (k, s, p, d, c) = a;
    let y = match ours {
        true => max_pool2d(x.clone(), k, s, p, d, c),
        false => module::max_pool2d(x.clone(), k, s, p, d, c),
    };
    let r = Tensor::<B, 4>::from_data(
        TensorData::new(values(y.shape().num_elements(), 2), y.dims()),
        &dev,
    )
    .cast(y.dtype());
    let g = (y.clone() * r).sum().backward();
    (common::data(y.inner()), common::data(x.grad(&g).unwrap()))
}

fn eval(shape: [usize; 4], a: Args, ours: bool) -> Vec<f32> {
    let n = shape.iter().product();
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(values(n, 3), shape), &Default::default());
    let (k, s, p, d, c) = a;
    let y = match ours {
        true => max_pool2d(x, k, s, p, d, c),
        false => module::max_pool2d(x, k, s, p, d, c),
    };
    y.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn pools_match_burns_bit_for_bit() {
    let plain = |k: usize, s: usize| ([k, k], [s, s], [0, 0], [1, 1], false);
    let cases: &[([usize; 4], Args)] = &[
        ([8, 6, 28, 28], plain(2, 2)),  // LeNet-5's first
        ([8, 16, 10, 10], plain(2, 2)), // and second
        ([3, 4, 9, 7], plain(3, 2)),    // overlapping, odd sizes
        ([2, 3, 7, 7], plain(2, 2)),    // a row and column left over
        ([2, 2, 5, 8], ([2, 3], [1, 2], [0, 0], [1, 1], false)), // rectangular
        ([2, 3, 9, 9], ([3, 3], [2, 2], [0, 0], [1, 1], true)), // ceil mode, every window fits
        ([2, 3, 8, 8], ([3, 3], [2, 2], [1, 1], [1, 1], false)), // padded: Burn's
        ([2, 3, 8, 8], ([2, 2], [2, 2], [0, 0], [2, 2], false)), // dilated: Burn's
        ([2, 3, 8, 8], ([3, 3], [2, 2], [0, 0], [1, 1], true)), // ceil, partial window: Burn's
    ];
    for (shape, a) in cases {
        for half in [false, true] {
            let what = format!("{shape:?} {a:?} half {half}");
            assert_eq!(
                run(*shape, *a, half, true),
                run(*shape, *a, half, false),
                "{what}"
            );
        }
        assert_eq!(
            eval(*shape, *a, true),
            eval(*shape, *a, false),
            "{shape:?} {a:?} eval"
        );
    }
}

/// The gradient lands where the maximum was: at the first of tied values.
#[test]
fn ties_send_the_gradient_to_the_first_maximum() {
    let dev = Default::default();
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(vec![1.0f32, 3.0, 3.0, 2.0], [1, 1, 2, 2]),
        &dev,
    )
    .require_grad();
    let y = max_pool2d(x.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
    assert_eq!(y.clone().into_data().to_vec::<f32>().unwrap(), vec![3.0]);
    let g = y.sum().backward();
    let dx = x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
    assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
}

//! The quantized `Linear`: same results as `QMatrix::matmul` for any leading shape, bias added,
//! clear errors for inputs it cannot take, and a loud failure when a gradient is asked through it.

use tessera::kernels::quant::{quantize, QMatrix, QType};
use tessera::nn::Linear;
use tessera::util::rng::Rng;
use tessera::{DType, Device, Tensor};

fn layer(rows: usize, cols: usize, bias: bool) -> (Linear, QMatrix, Vec<f32>) {
    let mut rng = Rng::new(7);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
    let q = QMatrix::new(QType::Q4_1, rows, cols, quantize(QType::Q4_1, &w).unwrap()).unwrap();
    let b: Vec<f32> = (0..rows).map(|i| i as f32 * 0.25).collect();
    let bt = bias.then(|| Tensor::new(b.as_slice(), &Device::Cpu).unwrap());
    (Linear::quantized(q.clone(), bt).unwrap(), q, b)
}

#[test]
fn quantized_linear_equals_qmatrix_matmul() {
    let (rows, cols) = (48, 64);
    let (lin, q, b) = layer(rows, cols, true);
    let mut rng = Rng::new(8);
    let x: Vec<f32> = (0..2 * 3 * cols).map(|_| rng.normal() as f32).collect();
    let xt = Tensor::from_vec(x.clone(), (2, 3, cols), &Device::Cpu).unwrap(); // (B, T, in)
    let y = lin.forward(&xt).unwrap(); // (B, T, out)
    assert_eq!(y.dims(), &[2, 3, rows]);
    let mut want = vec![0f32; 6 * rows];
    q.matmul(&x, 6, &mut want).unwrap();
    for (i, v) in want.iter_mut().enumerate() {
        *v += b[i % rows];
    }
    let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got, want);
    assert_eq!(lin.weight().dims(), &[0, cols]);
    assert!(lin.qmatrix().is_some());
}

#[test]
fn quantized_linear_rejects_what_it_cannot_run() {
    let (lin, _, _) = layer(8, 32, false);
    let x64 = Tensor::zeros((1, 32), DType::F64, &Device::Cpu).unwrap();
    let e = lin.forward(&x64).unwrap_err().to_string();
    assert!(e.contains("f32"), "{e}");
    let wrong = Tensor::zeros((1, 31), DType::F32, &Device::Cpu).unwrap();
    assert!(lin.forward(&wrong).is_err());
}

#[test]
fn gradient_through_a_quantized_linear_is_an_error() {
    let (lin, _, _) = layer(8, 32, true);
    let x =
        candle_core::Var::from_tensor(&Tensor::ones((2, 32), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    let loss = lin.forward(x.as_tensor()).unwrap().sum_all().unwrap();
    let e = loss.backward().unwrap_err().to_string();
    assert!(e.contains("inference-only"), "{e}");
}

#[test]
fn dense_linear_is_unchanged() {
    let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu).unwrap(); // (out 3, in 2)
    let x = Tensor::new(&[[1f32, -1.0]], &Device::Cpu).unwrap();
    let y: Vec<Vec<f32>> = Linear::new(w.clone(), None)
        .forward(&x)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(y, vec![vec![-1.0, -1.0, -1.0]]);
    let yt: Vec<Vec<f32>> = Linear::new_transposed(w.t().unwrap(), None)
        .forward(&x)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(yt, y);
    assert!(Linear::new(w, None).qmatrix().is_none());
}

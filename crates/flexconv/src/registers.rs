//! The widest vector registers this CPU has, detected at run time: the
//! kernels built for each (the batch norm's sums) and the choices tuned for
//! each (the weight gradient's product layout) read it from here.

/// A CPU's widest vector registers, as the kernels use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registers {
    /// Neither below: the plain loops, as compiled for the baseline.
    Plain,
    /// 256-bit registers (AVX2, no AVX-512F): the batch norm's sums in two
    /// 4-f64 registers each, gemm's 16-row microkernel.
    Avx2,
    /// 512-bit registers (AVX-512F): the batch norm's sums in one 8-f64
    /// register each, gemm's 64-row microkernel, `outer.rs`'s sums.
    Avx512,
}

impl Registers {
    /// The widest this CPU has.
    pub(crate) fn widest() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Registers::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Registers::Avx2;
            }
        }
        Registers::Plain
    }
}

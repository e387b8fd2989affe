//! The widest vector registers this CPU has, detected at run time: the
//! kernels built for each (the batch norm's sums) and the choices tuned for
//! each (the weight gradient's product layout) read it from here.

/// A CPU's widest vector registers, as the kernels use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registers {
    /// The plain loop, as compiled for the baseline.
    Plain,
    /// Two 4-f64 registers a sum (a CPU with AVX2 only).
    Avx2,
    /// One 8-f64 register a sum (a CPU with AVX-512F only).
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

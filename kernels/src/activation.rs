//! The nonlinearity after a linear layer (re-exported as `eltwise::Activation`).

/// The nonlinearity applied after a linear layer.
///
/// ```
/// use dlrm_microkernels::eltwise::Activation;
/// assert_eq!(Activation::Relu.apply(-1.0), 0.0);
/// assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
/// // The derivative is computed from the *output* y = f(x).
/// assert_eq!(Activation::Relu.derivative_from_output(2.0), 1.0);
/// assert_eq!(Activation::Sigmoid.derivative_from_output(0.5), 0.25);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)` (NaN stays NaN). Its mask for backward is the output's sign: `y > 0` exactly where
    /// `x > 0`, so no separate mask is stored.
    #[default]
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
}

impl Activation {
    /// `f(x)`.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::eltwise::Activation::None.apply(-3.0), -3.0);
    /// ```
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            // NaN propagates, as in PyTorch (f32::max would drop it).
            Activation::Relu => {
                if x <= 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// `f'(x)` expressed through `y = f(x)`.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::eltwise::Activation::Relu.derivative_from_output(0.0), 0.0);
    /// ```
    #[inline(always)]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::None => 1.0,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
        }
    }
}

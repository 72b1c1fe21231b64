//! The names of a model's tensors, as the DLRM reference's PyTorch state dict names them:
//! built and parsed here only.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Which MLP.
///
/// ```
/// use dlrm_kernels::checkpoint::Which;
/// assert_eq!(Which::Bottom.prefix(), "bot_l");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Which {
    /// The bottom MLP (`bot_l`).
    Bottom,
    /// The top MLP (`top_l`).
    Top,
}

impl Which {
    /// `"bot_l"` or `"top_l"`, the reference's attribute names.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::checkpoint::Which::Top.prefix(), "top_l");
    /// ```
    pub fn prefix(self) -> &'static str {
        match self {
            Which::Bottom => "bot_l",
            Which::Top => "top_l",
        }
    }
}

/// A tensor of a DLRM checkpoint, by what it holds. Its [`Display`](fmt::Display) is the
/// state-dict name (`bot_l.<2l>.weight` `[out][in]`, `bot_l.<2l>.bias`, `top_l.<2l>.*`:
/// `nn.Sequential` of (Linear, ReLU) pairs puts the linear layers at even indices;
/// `emb_l.<t>.weight` `[rows][dim]`; `emb_l.<t>.adagrad_state` `[rows]`, the row-wise
/// Adagrad accumulators), and [`FromStr`] reads one back.
///
/// ```
/// use dlrm_kernels::checkpoint::{TensorName, Which};
/// let name = TensorName::MlpWeight { mlp: Which::Top, layer: 1 };
/// assert_eq!(name.to_string(), "top_l.2.weight");
/// assert_eq!("top_l.2.weight".parse::<TensorName>()?, name);
/// assert_eq!("emb_l.3.adagrad_state".parse::<TensorName>()?, TensorName::AdagradState { table: 3 });
/// assert!("top_l.1.weight".parse::<TensorName>().is_err()); // odd indices are the ReLUs
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorName {
    /// The weights of layer `layer` of an MLP.
    MlpWeight {
        /// Which MLP.
        mlp: Which,
        /// The layer, from 0.
        layer: usize,
    },
    /// The bias of layer `layer` of an MLP.
    MlpBias {
        /// Which MLP.
        mlp: Which,
        /// The layer, from 0.
        layer: usize,
    },
    /// The weights of an embedding table.
    Table {
        /// The table, from 0.
        table: usize,
    },
    /// The row-wise Adagrad state of an embedding table.
    AdagradState {
        /// The table, from 0.
        table: usize,
    },
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TensorName::MlpWeight { mlp, layer } => {
                write!(f, "{}.{}.weight", mlp.prefix(), 2 * layer)
            }
            TensorName::MlpBias { mlp, layer } => write!(f, "{}.{}.bias", mlp.prefix(), 2 * layer),
            TensorName::Table { table } => write!(f, "emb_l.{table}.weight"),
            TensorName::AdagradState { table } => write!(f, "emb_l.{table}.adagrad_state"),
        }
    }
}

impl FromStr for TensorName {
    type Err = Error;

    /// # Errors
    ///
    /// [`Error::Config`] for a name that is not one of a DLRM checkpoint's.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("no parameter tensor named {s:?}"));
        let parts: Vec<&str> = s.split('.').collect();
        let [prefix, index, kind] = parts[..] else {
            return Err(bad());
        };
        // Only plain decimal numbers, so that each tensor has one name.
        let index: usize = index
            .parse()
            .ok()
            .filter(|i: &usize| i.to_string() == index)
            .ok_or_else(bad)?;
        let mlp = match prefix {
            "bot_l" => Some(Which::Bottom),
            "top_l" => Some(Which::Top),
            "emb_l" => None,
            _ => return Err(bad()),
        };
        match (mlp, kind) {
            (Some(mlp), "weight") if index.is_multiple_of(2) => Ok(TensorName::MlpWeight {
                mlp,
                layer: index / 2,
            }),
            (Some(mlp), "bias") if index.is_multiple_of(2) => Ok(TensorName::MlpBias {
                mlp,
                layer: index / 2,
            }),
            (None, "weight") => Ok(TensorName::Table { table: index }),
            (None, "adagrad_state") => Ok(TensorName::AdagradState { table: index }),
            _ => Err(bad()),
        }
    }
}

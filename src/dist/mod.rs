//! Training on several processes: the communicator seam, table placement, and (next) the
//! hybrid-parallel step.
//!
//! The paper's scale-out is hybrid: the MLPs are replicated and data-parallel (each rank
//! takes a slice of the global batch and the ranks sum their weight gradients), the embedding
//! tables are model-parallel (each rank owns whole tables, or row ranges of a table too large
//! for one rank, and pools them for the whole global batch), and all-to-all exchanges move
//! pooled embeddings to the ranks that own the samples and their gradients back.
//!
//! | file | what |
//! |---|---|
//! | `comm.rs` | [`Communicator`]: the collectives the step needs; [`Local`], the single-process implementation |
//! | `mpi.rs` | [`Mpi`], the same over MPI (cargo feature `mpi`) |
//! | `plan.rs` | [`Plan`]: which rank owns which tables or row ranges |

mod comm;
#[cfg(feature = "mpi")]
mod mpi;
mod plan;

pub use comm::{Communicator, Local, NoProgress, Progress, Wire, WireBound};
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
pub use plan::{Plan, Shard, TableLoad};

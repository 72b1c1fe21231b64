//! What the x86 SIMD backends share: the [`Vector`] abstraction over register width and lane
//! masks, and the BRGEMM register-tile body written once against it ([`tile`]).

pub(crate) mod tile;
pub(crate) mod vector;

pub(crate) use vector::Vector;

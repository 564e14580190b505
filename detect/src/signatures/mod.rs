//! Gray-failure signatures: each looks at one closed window's node aggregates against the
//! node's baseline and may return a [`schemas::Finding`].

pub mod black_hole;

pub use black_hole::{BlackHole, BlackHoleSpec};

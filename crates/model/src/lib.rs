//! DRAFT essay.
//!
//! CAVEATS
//! - draft

pub mod model;
pub mod properties;
pub mod state;

pub use model::{Action, Bug, ElectionModel, CRASHES_MAX, EPOCH_MAX};
pub use state::State;

//! Wire types of the Tailscale control protocol and their text forms.
//!
//! Pure: no I/O, nothing async.

mod derp;
mod keys;
mod messages;
mod prefix;
mod wire_keys;

pub use derp::{DerpMap, DerpNode, DerpRegion};
pub use keys::{encode_hex, KeyError, MachinePrivate};
pub use messages::*;
pub use prefix::{Prefix, PrefixError};
pub use wire_keys::{DiscoPublic, MachinePublic, NodePublic};

/// The oldest client capability version tinyscale serves (Tailscale 1.80,
/// early 2025); older clients are told to upgrade.
pub const MIN_CAPABILITY_VERSION: u16 = 113;

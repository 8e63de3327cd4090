//! Wire types of the Tailscale control protocol and their text forms.
//!
//! Pure: no I/O, nothing async. The control protocol's JSON types arrive with
//! the protocol issue; what lives here now is what the config and the store need.

mod keys;
mod prefix;

pub use keys::{encode_hex, KeyError, MachinePrivate};
pub use prefix::{Prefix, PrefixError};

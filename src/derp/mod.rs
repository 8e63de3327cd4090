//! The embedded DERP relay: frames and handshake boxes (pure), the relay
//! server (I/O), its self-signed certificate (all with the `derp` feature),
//! and the DERP map clients get (always).

#[cfg(feature = "derp")]
pub mod cert;
#[cfg(feature = "derp")]
pub mod frame;
#[cfg(feature = "derp")]
pub mod handshake;
pub mod map;
#[cfg(feature = "derp")]
pub mod relay;

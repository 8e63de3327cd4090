//! The embedded DERP relay: frames and handshake boxes (pure), the relay
//! server (I/O), its self-signed certificate, and the DERP map clients get.

pub mod cert;
pub mod frame;
pub mod handshake;
pub mod map;
pub mod relay;

//! tinyscale: a Tailscale-compatible coordination server for the home router.
//!
//! The module map follows ARCHITECTURE.md: pure protocol and policy logic in
//! `tailcfg` (and later `noise`, `mapper`, `policy`), the one mutation path in
//! `state`, durable bytes in `store`, and I/O at the edges (`server`, `api`, `cli`).

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod derp;
pub mod dns;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod logger;
pub mod mapper;
pub mod noise;
#[cfg(feature = "oidc")]
pub mod oidc;
pub mod policy;
pub mod quota;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
#[cfg(feature = "derp")]
pub mod stun;
pub mod tailcfg;
pub mod text;
pub mod url;
pub mod web;
pub mod yaml;

// What the live server's integration of the policy uses (see src/policy).
pub use policy::{Compiled, NodeInfo, Policy, PolicyError, UserRef};

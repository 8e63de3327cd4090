//! Login through an OpenID Connect provider (authentik, or any other).

pub mod jwt;

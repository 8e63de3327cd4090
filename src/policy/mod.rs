//! The tailnet policy: Tailscale's policy language (HuJSON `groups`,
//! `hosts`, `tagOwners`, `acls`, `grants`, `autoApprovers`; `ssh`,
//! `nodeAttrs` and `tests` read and checked), checked into a [`Policy`] and
//! compiled per node into packet filters, peer visibility and routes.
//!
//! Pure: text and nodes in, answers out; no store, no I/O. The answers
//! follow what Tailscale's own control plane computes
//! (tests/policy_fixtures.rs holds it to ../shared/fixtures/policy).
//!
//! - `hujson`: the reader, with line and column of every value, bounded.
//! - `alias`: the languages inside strings (aliases, ports, protocols).
//! - `syntax`, `rules`, `extras`: the checks, into `model`'s types.
//! - `nodes`, `resolve`: the tailnet as the compiler sees it.
//! - `compile`, `filter`, `peers`: filters, visibility, routes.

mod alias;
mod compile;
mod extras;
mod filter;
pub mod hujson;
mod ipset;
mod model;
mod nodes;
mod peers;
mod resolve;
mod rules;
pub mod simulate;
mod syntax;
mod tags;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bounds;

use std::fmt;

pub use compile::Compiled;
pub use hujson::{HujsonError, Pos};
pub use model::Policy;
pub use nodes::{NodeInfo, UserRef};
pub use syntax::{Problem, MAX_ENTRIES, MAX_LIST, MAX_PROBLEMS, MAX_RULES};

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Not HuJSON (or too large, or nested too deep).
    Syntax(HujsonError),
    /// HuJSON, but not a valid policy: every problem found (up to
    /// [`MAX_PROBLEMS`]) and how many more there were.
    Invalid { problems: Vec<Problem>, more: usize },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Syntax(e) => write!(f, "{e}"),
            PolicyError::Invalid { problems, more } => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{p}")?;
                }
                if *more > 0 {
                    write!(f, "\n... and {more} more problem(s)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Reads and checks a policy written in HuJSON.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let root = hujson::parse(text).map_err(PolicyError::Syntax)?;
        syntax::read(&root).map_err(|(problems, more)| PolicyError::Invalid { problems, more })
    }
}

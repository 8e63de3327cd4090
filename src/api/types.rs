//! Requests and answers of the admin API as types, shared by the server and
//! the CLI (and later the REST API and web UI) so neither side walks JSON.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/policy`'s answer and `PUT /api/v1/policy`'s request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyText {
    pub policy: String,
}

/// `PUT /api/v1/policy`'s answer: the policy now in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicySet {
    pub policy: String,
    /// Sections read and checked but not acted on yet.
    #[serde(default)]
    pub not_applied: Vec<String>,
}

/// `POST /api/v1/node/{id}/tags`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetTags {
    pub tags: Vec<String>,
}

/// `POST /api/v1/node/{id}/approve_routes`: the routes approved from now on
/// (empty: none). An exit route approves its pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApproveRoutes {
    pub routes: Vec<String>,
}

//! `nodes approve-routes` and `nodes list-routes`, as Headscale spells them.

use serde_json::Value;

use super::args::{value, Flag};
use super::output::{cell, emit, table};
use super::{fail, no_extra_words, node_id, parse, sub, usage_err, Failure};
use crate::api::types::ApproveRoutes;

const FLAGS: &[Flag] = &[value("identifier", Some('i')), value("routes", Some('r'))];

/// Whether `verb` is one of the routes verbs of `nodes`.
pub(super) fn is_routes_verb(verb: &str) -> bool {
    matches!(verb, "approve-routes" | "list-routes" | "routes")
}

pub(super) fn nodes_routes(args: &[String]) -> Result<(), Failure> {
    let (p, c) = parse(args, FLAGS, "nodes")?;
    let verb = sub(&p, "nodes", "approve-routes, list-routes")?;
    match verb.as_str() {
        "approve-routes" => {
            no_extra_words(&p, 1, "nodes approve-routes")?;
            let id = node_id(&p)?;
            if p.get("routes").is_none() {
                return Err(usage_err(
                    "usage: tinyscale nodes approve-routes -i ID -r 192.168.1.0/24,0.0.0.0/0 (-r '' approves none)",
                ));
            }
            // An empty -r approves none.
            let routes = p.list("routes");
            let body = serde_json::to_value(ApproveRoutes { routes }).map_err(|e| fail(e.to_string()))?;
            let r = c.call("POST", &format!("/api/v1/node/{id}/approve_routes"), Some(body))?;
            emit(c.format, &r["node"], || {
                format!(
                    "Node {} approved routes: {}",
                    cell(&r["node"]["given_name"]),
                    cell(&r["node"]["approved_routes"])
                )
            });
        }
        _ => {
            no_extra_words(&p, 1, "nodes list-routes")?;
            let list: Vec<Value> = match p.get("identifier") {
                Some(_) => {
                    let id = node_id(&p)?;
                    vec![c.call("GET", &format!("/api/v1/node/{id}"), None)?["node"].take()]
                }
                None => {
                    let r = c.call("GET", "/api/v1/node", None)?;
                    let all = r["nodes"].as_array().cloned().unwrap_or_default();
                    // Headscale lists the nodes that have routes at all.
                    let has = |n: &Value, k: &str| n[k].as_array().is_some_and(|a| !a.is_empty());
                    all.into_iter().filter(|n| has(n, "available_routes") || has(n, "approved_routes")).collect()
                }
            };
            emit(c.format, &Value::Array(list.clone()), || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| {
                        vec![
                            cell(&n["id"]),
                            cell(&n["name"]),
                            cell(&n["approved_routes"]),
                            cell(&n["available_routes"]),
                            cell(&n["subnet_routes"]),
                        ]
                    })
                    .collect();
                table(&["ID", "Hostname", "Approved", "Available", "Serving (Primary)"], &rows)
            });
        }
    }
    Ok(())
}

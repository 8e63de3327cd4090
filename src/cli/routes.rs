//! `nodes approve-routes` and `nodes list-routes`, as Headscale spells them.

use super::args::{value, Flag};
use super::nodes::{all_nodes, node_id};
use super::output::{emit, list, table, text};
use super::shapes;
use super::{no_extra_words, parse, sub, usage_err, Failure};
use crate::api::types::{ApproveRoutesRequest, Node, NodeResponse};
use crate::clock;

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
            let body = ApproveRoutesRequest { routes: p.list("routes") };
            let r: NodeResponse = c.call("POST", &format!("/api/v1/node/{id}/approve_routes"), Some(&body))?;
            emit(c.format, &shapes::Node::new(&r.node, clock::now_unix()), || {
                format!("Node {} approved routes: {}", text(&r.node.given_name), list(&r.node.approved_routes))
            });
        }
        _ => {
            no_extra_words(&p, 1, "nodes list-routes")?;
            let nodes: Vec<Node> = match p.get("identifier") {
                Some(_) => {
                    let id = node_id(&p)?;
                    vec![c.get::<NodeResponse>("GET", &format!("/api/v1/node/{id}"))?.node]
                }
                // Headscale lists the nodes that have routes at all.
                None => all_nodes(&c, None)?
                    .into_iter()
                    .filter(|n| !n.available_routes.is_empty() || !n.approved_routes.is_empty())
                    .collect(),
            };
            let now = clock::now_unix();
            let shown: Vec<_> = nodes.iter().map(|n| shapes::Node::new(n, now)).collect();
            emit(c.format, &shown, || {
                let rows: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.to_string(),
                            text(&n.name),
                            list(&n.approved_routes),
                            list(&n.available_routes),
                            list(&n.subnet_routes),
                        ]
                    })
                    .collect();
                table(&["ID", "Hostname", "Approved", "Available", "Serving (Primary)"], &rows)
            });
        }
    }
    Ok(())
}

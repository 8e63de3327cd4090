//! `nodes …` (the routes verbs are in `routes.rs`), `auth register|pending`
//! and `debug create-node`.

use super::args::{switch, value, Flag, Parsed};
use super::output::{emit, list, table, text, when_opt};
use super::shapes::{self, Deleted};
use super::{is_global_value, no_extra_words, parse, routes, sub, usage_err, Ctx, Failure};
use crate::api::types::{
    AuthRegisterRequest, CreateNodeRequest, Empty, Node, NodeResponse, NodesResponse, PendingResponse, SetTagsRequest,
    UserRef,
};
use crate::clock;
use crate::url::percent_encode;

fn row(n: &Node, now: i64) -> Vec<String> {
    let shown = shapes::Node::new(n, now);
    vec![
        n.id.to_string(),
        text(&n.name),
        text(&n.given_name),
        text(n.user.as_ref().map_or("", |u| &u.name)),
        list(&n.ip_addresses),
        n.ephemeral.to_string(),
        when_opt(n.last_seen.as_deref()),
        n.expiry.as_deref().map_or_else(|| "never".into(), |e| when_opt(Some(e))),
        if n.online { "online".into() } else { "offline".into() },
        if shown.expired { "yes".into() } else { "no".into() },
    ]
}

pub(super) fn node_id(p: &Parsed) -> Result<u64, Failure> {
    let id =
        p.get("identifier").ok_or_else(|| usage_err("say which node: --identifier ID (see `tinyscale nodes list`)"))?;
    id.parse().map_err(|_| usage_err(format!("{id:?} is not a node id")))
}

/// Every node, or those of `user`.
pub(super) fn all_nodes(c: &Ctx, user: Option<&str>) -> Result<Vec<Node>, Failure> {
    let q = user.map(|u| format!("?user={}", percent_encode(u))).unwrap_or_default();
    Ok(c.get::<NodesResponse>("GET", &format!("/api/v1/node{q}"))?.nodes)
}

pub(super) fn nodes(args: &[String]) -> Result<(), Failure> {
    // `-t` is a switch for `list` (show tags) and the tags themselves for
    // `tag`, as in Headscale.
    const FLAGS: &[Flag] =
        &[value("user", Some('u')), value("identifier", Some('i')), switch("tags", Some('t')), value("key", Some('k'))];
    const TAG_FLAGS: &[Flag] = &[value("identifier", Some('i')), value("tags", Some('t'))];
    let verb_word = args.iter().find(|a| !a.starts_with('-') && !is_global_value(args, a));
    let tagging = verb_word.is_some_and(|v| matches!(v.as_str(), "tag" | "tags"));
    if verb_word.is_some_and(|v| routes::is_routes_verb(v)) {
        return routes::nodes_routes(args);
    }
    let (p, c) = parse(args, if tagging { TAG_FLAGS } else { FLAGS }, "nodes")?;
    let verb = sub(&p, "nodes", "list, rename, tag, approve-routes, list-routes, expire, delete, register")?;
    let now = clock::now_unix();
    match verb.as_str() {
        "tag" | "tags" => {
            no_extra_words(&p, 1, "nodes tag")?;
            let id = node_id(&p)?;
            if p.get("tags").is_none() {
                return Err(usage_err("usage: tinyscale nodes tag -i ID -t tag:a,tag:b"));
            }
            let body = SetTagsRequest { tags: p.list("tags") };
            let r: NodeResponse = c.call("POST", &format!("/api/v1/node/{id}/tags"), Some(&body))?;
            emit(c.format, &shapes::Node::new(&r.node, now), || {
                format!("Node {} tagged: {}", text(&r.node.given_name), list(&r.node.tags))
            });
        }
        "register" => {
            no_extra_words(&p, 1, "nodes register")?;
            let id =
                p.get("key").ok_or_else(|| usage_err("usage: tinyscale nodes register --key AUTH_ID --user USER"))?;
            approve(&c, id, p.get("user"))?;
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "nodes list")?;
            let nodes = all_nodes(&c, p.get("user"))?;
            let shown: Vec<_> = nodes.iter().map(|n| shapes::Node::new(n, now)).collect();
            emit(c.format, &shown, || {
                let mut headers = vec![
                    "ID",
                    "Hostname",
                    "Name",
                    "User",
                    "IP addresses",
                    "Ephemeral",
                    "Last seen",
                    "Expiration",
                    "Connected",
                    "Expired",
                ];
                let mut rows: Vec<Vec<String>> = nodes.iter().map(|n| row(n, now)).collect();
                if p.has("tags") {
                    headers.push("Tags");
                    for (row, n) in rows.iter_mut().zip(&nodes) {
                        row.push(list(&n.tags));
                    }
                }
                table(&headers, &rows)
            });
        }
        "rename" | "mv" => {
            let id = node_id(&p)?;
            let new_name = p.words.get(1).ok_or_else(|| usage_err("usage: tinyscale nodes rename -i ID NEW_NAME"))?;
            no_extra_words(&p, 2, "nodes rename")?;
            let r: NodeResponse = c.get("POST", &format!("/api/v1/node/{id}/rename/{}", percent_encode(new_name)))?;
            emit(c.format, &shapes::Node::new(&r.node, now), || format!("Node renamed: {}", text(&r.node.given_name)));
        }
        "expire" | "logout" => {
            no_extra_words(&p, 1, "nodes expire")?;
            let id = node_id(&p)?;
            let r: NodeResponse = c.get("POST", &format!("/api/v1/node/{id}/expire"))?;
            emit(c.format, &shapes::Node::new(&r.node, now), || format!("Node {} expired", text(&r.node.given_name)));
        }
        "delete" | "rm" | "del" => {
            no_extra_words(&p, 1, "nodes delete")?;
            let id = node_id(&p)?;
            c.confirm(&format!("Delete node {id}?"))?;
            let _: Empty = c.get("DELETE", &format!("/api/v1/node/{id}"))?;
            emit(c.format, &Deleted { id: Some(id), name: None, deleted: true }, || format!("Node {id} deleted"));
        }
        other => {
            return Err(usage_err(format!(
                "unknown verb `nodes {other}` (list, rename, tag, approve-routes, list-routes, expire, delete)"
            )))
        }
    }
    Ok(())
}

/// Approves the waiting registration `auth_id` for `user`.
fn approve(c: &Ctx, auth_id: &str, user: Option<&str>) -> Result<(), Failure> {
    let user = user.ok_or_else(|| usage_err("say whose device it is: --user NAME"))?;
    // The id is what follows /register/ in the login URL; take the URL too.
    let auth_id = auth_id.rsplit('/').next().unwrap_or(auth_id);
    let body = AuthRegisterRequest { auth_id: auth_id.to_string(), user: UserRef::Text(user.to_string()) };
    let r: NodeResponse = c.call("POST", "/api/v1/auth/register", Some(&body))?;
    let n = &r.node;
    emit(c.format, &shapes::Node::new(n, clock::now_unix()), || {
        format!(
            "Node {} registered for {} ({})",
            text(&n.given_name),
            text(n.user.as_ref().map_or("", |u| &u.name)),
            list(&n.ip_addresses)
        )
    });
    Ok(())
}

pub(super) fn auth(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[value("auth-id", Some('a')), value("user", Some('u'))];
    let (p, c) = parse(args, FLAGS, "auth")?;
    match sub(&p, "auth", "register, pending")?.as_str() {
        "register" | "approve" => {
            no_extra_words(&p, 1, "auth register")?;
            let id =
                p.get("auth-id").ok_or_else(|| usage_err("usage: tinyscale auth register --auth-id ID --user USER"))?;
            approve(&c, id, p.get("user"))
        }
        "pending" | "list" | "ls" => {
            no_extra_words(&p, 1, "auth pending")?;
            let r: PendingResponse = c.get("GET", "/api/v1/auth/pending")?;
            let shown: Vec<shapes::Pending> = r.pending.iter().map(shapes::Pending::from).collect();
            emit(c.format, &shown, || {
                let rows: Vec<Vec<String>> = shown
                    .iter()
                    .map(|p| vec![text(&p.auth_id), text(&p.hostname), format!("{}s", p.age_seconds)])
                    .collect();
                table(&["Auth ID", "Hostname", "Waiting"], &rows)
            });
            Ok(())
        }
        other => Err(usage_err(format!("unknown verb `auth {other}` (register, pending)"))),
    }
}

pub(super) fn debug(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[value("user", Some('u')), value("name", Some('n')), value("key", Some('k'))];
    let (p, c) = parse(args, FLAGS, "debug")?;
    match sub(&p, "debug", "create-node")?.as_str() {
        "create-node" => {
            no_extra_words(&p, 1, "debug create-node")?;
            let need = |f: &str| p.get(f).ok_or_else(|| usage_err(format!("debug create-node needs --{f}")));
            let body = CreateNodeRequest {
                user: UserRef::Text(need("user")?.to_string()),
                name: need("name")?.to_string(),
                key: need("key")?.to_string(),
            };
            let r: NodeResponse = c.call("POST", "/api/v1/debug/node", Some(&body))?;
            emit(c.format, &shapes::Node::new(&r.node, clock::now_unix()), || {
                format!("Node created: {} {}", text(&r.node.given_name), list(&r.node.ip_addresses))
            });
            Ok(())
        }
        other => Err(usage_err(format!("unknown verb `debug {other}` (create-node)"))),
    }
}

//! The admin pages' content, rendered on the server from the API's types:
//! every action is a plain HTML form (see `layout::form`).

use super::html_escape as esc;
use super::layout::form;
use crate::api::types::{ApiKey, Node, PendingLogin, PreAuthKey, User};

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "–".into()
    } else {
        esc(s)
    }
}

fn when(t: Option<&str>) -> String {
    t.and_then(|t| t.get(..16)).map_or_else(|| "–".into(), |t| t.replace('T', " "))
}

fn user_options(users: &[User], selected: Option<u64>) -> String {
    users
        .iter()
        .map(|u| {
            let sel = if Some(u.id) == selected { " selected" } else { "" };
            format!("<option value={}{sel}>{}</option>", u.id, esc(&u.name))
        })
        .collect()
}

/// The devices page: one row per node, its actions folded under it.
pub fn devices(nodes: &[Node], csrf: &str) -> String {
    if nodes.is_empty() {
        return "<p>No devices yet. Make a pre-auth key under <a href=/admin/keys>Keys</a>, or approve a device under \
                <a href=/admin/pending>Waiting</a>.</p>"
            .into();
    }
    let rows: String = nodes.iter().map(|n| device_row(n, csrf)).collect();
    format!(
        "<div class=scroll><table><thead><tr><th>Device</th><th>Status</th><th>User</th><th>Addresses</th><th>OS · client</th>\
         <th>Expiry</th><th>Tags</th><th>Routes</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

fn device_row(n: &Node, csrf: &str) -> String {
    let id = n.id.to_string();
    let owner = n.user.as_ref().map_or("–".to_string(), |u| esc(&u.name));
    let status = if n.online {
        "<span class=on>online</span>".to_string()
    } else {
        format!("<span class=off>{}</span>", n.last_seen.as_deref().map_or("offline".into(), |t| when(Some(t))))
    };
    let routes = if n.available_routes.is_empty() {
        "–".to_string()
    } else {
        let boxes: String = n
            .available_routes
            .iter()
            .map(|r| {
                let on = if n.approved_routes.contains(r) { " checked" } else { "" };
                let serving = if n.subnet_routes.contains(r) { " <span class=on>serving</span>" } else { "" };
                format!(
                    "<label><input type=checkbox name=route value=\"{r}\"{on}> {r}</label>{serving}<br>",
                    r = esc(r)
                )
            })
            .collect();
        format!(
            "<details><summary>{}</summary>{}</details>",
            n.available_routes.len(),
            form(csrf, "routes", &[("id", &id)], &boxes, "Approve checked")
        )
    };
    let actions = format!(
        "<details><summary>Manage</summary><div class=stack>{}{}{}{}</div></details>",
        form(
            csrf,
            "rename",
            &[("id", &id)],
            &format!("<input name=name value=\"{}\" aria-label=\"new name\" required> ", esc(&n.given_name)),
            "Rename"
        ),
        form(
            csrf,
            "tags",
            &[("id", &id)],
            &format!(
                "<input name=tags value=\"{}\" placeholder=\"tag:a,tag:b\" aria-label=tags required> ",
                esc(&n.tags.join(","))
            ),
            "Set tags"
        ),
        form(csrf, "expire", &[("id", &id)], "", "Expire (log out)"),
        form(csrf, "delete", &[("id", &id)], "", "Delete"),
    );
    format!(
        "<tr id=\"node-{id}\"><td><b class=name>{name}</b><br><span class=mute>{host}</span>{actions}</td>\
         <td id=\"online-{id}\">{status}</td><td>{owner}</td><td>{ips}</td><td>{os}<br><span class=mute>{ver}</span></td>\
         <td>{expiry}</td><td>{tags}</td><td>{routes}</td></tr>",
        name = esc(&n.given_name),
        host = esc(&n.name),
        ips = n.ip_addresses.iter().map(|a| esc(a)).collect::<Vec<_>>().join("<br>"),
        os = or_dash(&n.os),
        ver = esc(&n.client_version),
        expiry = n.expiry.as_deref().map_or("never".into(), |t| when(Some(t))),
        tags = or_dash(&n.tags.join(", ")),
    )
}

/// Devices waiting at their login URL: approve for a user, or reject.
pub fn pending(list: &[PendingLogin], users: &[User], csrf: &str) -> String {
    if list.is_empty() {
        return "<p>No device is waiting. A device waits here after <code>tailscale up --login-server …</code> \
                without a key, for 15 minutes.</p>"
            .into();
    }
    let rows: String = list.iter().map(|p| pending_row(p, users, csrf)).collect();
    format!("<div class=scroll><table><thead><tr><th>Device</th><th>Waiting</th><th>Approve for</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>")
}

pub fn pending_row(p: &PendingLogin, users: &[User], csrf: &str) -> String {
    let approve = form(
        csrf,
        "approve",
        &[("auth_id", &p.auth_id)],
        &format!(
            "<select name=user aria-label=user required><option value=\"\">choose…</option>{}</select> ",
            user_options(users, None)
        ),
        "Approve",
    );
    format!(
        "<tr><td><b>{}</b><br><span class=mute>{}</span></td><td>{} s</td><td>{approve}</td><td>{}</td></tr>",
        esc(&p.hostname),
        esc(&p.node_key),
        p.age_seconds,
        form(csrf, "reject", &[("auth_id", &p.auth_id)], "", "Reject"),
    )
}

pub fn users(users: &[User], csrf: &str) -> String {
    let rows: String = users
        .iter()
        .map(|u| {
            let id = u.id.to_string();
            format!(
                "<tr><td>{id}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td><details><summary>Manage</summary>\
                 <div class=stack>{}{}</div></details></td></tr>",
                esc(&u.name),
                or_dash(&u.display_name),
                or_dash(&u.email),
                when(Some(&u.created_at)),
                form(csrf, "user_rename", &[("id", &id)], "<input name=name aria-label=\"new name\" required> ", "Rename"),
                form(csrf, "user_delete", &[("id", &id)], "", "Delete"),
            )
        })
        .collect();
    format!(
        "<div class=scroll><table><thead><tr><th>ID</th><th>Name</th><th>Display name</th><th>Email</th><th>Created</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table></div><h2>New user</h2>{}",
        form(csrf, "user_create", &[], "<input name=name placeholder=name aria-label=name required> <input name=email placeholder=email aria-label=email> ", "Create")
    )
}

/// Pre-auth keys, and the form that makes one.
pub fn keys(keys: &[PreAuthKey], users: &[User], csrf: &str, now: i64) -> String {
    let rows: String = keys
        .iter()
        .map(|k| {
            let expired = crate::api::views::passed(Some(&k.expiration), now);
            let owner = if k.acl_tags.is_empty() { k.user.as_ref().map_or("–".into(), |u| esc(&u.name)) } else { esc(&k.acl_tags.join(", ")) };
            let expire = if expired { "<span class=off>expired</span>".into() } else { form(csrf, "key_expire", &[("id", &k.id.to_string())], "", "Expire") };
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{owner}</td><td>{}{}{}</td><td>{}</td><td>{expire}</td></tr>",
                k.id,
                esc(&k.key),
                if k.reusable { "reusable " } else { "" },
                if k.ephemeral { "ephemeral " } else { "" },
                if k.used { "used" } else { "" },
                when(Some(&k.expiration)),
            )
        })
        .collect();
    let create = format!(
        "<label>User <select name=user>{}</select></label><br><label><input type=checkbox name=reusable value=1> reusable</label> \
         <label><input type=checkbox name=ephemeral value=1> ephemeral</label><br><label>Tags <input name=tags placeholder=\"tag:a,tag:b\"></label><br>\
         <label>Valid for <select name=expiration><option>1h</option><option selected>24h</option><option>7d</option><option>90d</option></select></label><br>",
        user_options(users, None)
    );
    format!(
        "<div class=scroll><table><thead><tr><th>ID</th><th>Key</th><th>Owner</th><th>Kind</th><th>Expires</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table></div><h2>New pre-auth key</h2><div class=stack>{}</div>",
        form(csrf, "key_create", &[], &create, "Create key")
    )
}

/// A key shown once, with the command that uses it.
pub fn new_key(key: &str, server_url: &str) -> String {
    format!(
        "<p>This key is shown only now. On the new device run:</p><pre id=cmd>tailscale up --login-server {} --authkey {}</pre>\
         <button data-copy=cmd hidden>Copy</button><p><a href=/admin/keys>Back to keys</a></p>",
        esc(server_url),
        esc(key)
    )
}

pub fn policy(text: &str, editable: bool, csrf: &str) -> String {
    if !editable {
        return format!(
            "<p class=hint>policy.mode is file: edit the file and send tinyscale SIGHUP to load it.</p><pre>{}</pre>",
            esc(text)
        );
    }
    format!(
        "<form method=post action=/admin/do><input type=hidden name=csrf value=\"{}\">\
         <textarea name=policy aria-label=policy spellcheck=false>{}</textarea><p>\
         <button name=op value=policy_check>Check</button> <button name=op value=policy_set>Save</button></p></form>",
        esc(csrf),
        esc(text)
    )
}

pub fn api_keys(keys: &[ApiKey], csrf: &str) -> String {
    let rows: String = keys
        .iter()
        .map(|k| {
            let prefix = k.prefix.clone();
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
                k.id,
                esc(&k.prefix),
                when(k.expiration.as_deref()),
                when(k.created_at.as_deref()),
                form(csrf, "apikey_expire", &[("prefix", &prefix)], "", "Expire"),
                form(csrf, "apikey_delete", &[("prefix", &prefix)], "", "Delete"),
            )
        })
        .collect();
    format!(
        "<div class=scroll><table><thead><tr><th>ID</th><th>Prefix</th><th>Expires</th><th>Created</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table></div><h2>New API key</h2>{}",
        form(
            csrf,
            "apikey_create",
            &[],
            "<label>Valid for <select name=expiration><option>7d</option><option selected>90d</option><option>365d</option></select></label> ",
            "Create"
        )
    )
}

/// A new API key, shown once.
pub fn new_api_key(key: &str) -> String {
    format!(
        "<p>This key is shown only now. Send it as <code>Authorization: Bearer …</code>.</p><pre id=key>{}</pre>\
         <button data-copy=key hidden>Copy</button><p><a href=/admin/apikeys>Back to API keys</a></p>",
        esc(key)
    )
}

/// The status page's figures.
pub struct Status {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub rss_kib: Option<u64>,
    pub store_bytes: Option<u64>,
    pub nodes: usize,
    pub online: usize,
    pub derp_clients: Option<usize>,
    pub sessions: usize,
}

pub fn status(s: &Status) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    let (h, m) = (s.uptime_secs / 3600, s.uptime_secs % 3600 / 60);
    format!(
        "<div class=scroll><table><tbody><tr><th>Version</th><td>tinyscale {}</td></tr><tr><th>Up</th><td>{h} h {m} min</td></tr>\
         <tr><th>Memory (RSS)</th><td>{}</td></tr><tr><th>Store on flash</th><td>{}</td></tr>\
         <tr><th>Devices</th><td>{} ({} connected)</td></tr><tr><th>DERP relay clients</th><td>{}</td></tr>\
         <tr><th>Admin sessions</th><td>{}</td></tr></tbody></table></div>",
        esc(s.version),
        opt(s.rss_kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))),
        opt(s.store_bytes.map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))),
        s.nodes,
        s.online,
        opt(s.derp_clients.map(|c| c.to_string())),
        s.sessions,
    )
}

/// The sign-in page of a router without OIDC: an API key.
pub fn login_with_key(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"flash bad\">{}</p>", esc(e))).unwrap_or_default();
    format!(
        "{error}<p>Sign in with an API key (<code>tinyscale apikeys create</code> on the router).</p>\
         <form method=post action=/admin/login><input name=key type=password autocomplete=off aria-label=\"API key\" \
         placeholder=hskey-api-… required style=\"width:100%\"><p><button>Sign in</button></p></form>"
    )
}

/// `/register/<id>` for a signed-in admin: approve the device for a user at
/// once. Anyone can make a device wait and send the admin its link, so the
/// page says what is known of it and no user is chosen for the admin.
pub fn register_for_admin(p: &PendingLogin, users: &[User], csrf: &str) -> String {
    format!(
        "<p>The device <b>{}</b> is waiting to join the tailnet (for {} s).</p>\
         <p class=\"mute key\">node key {}<br>machine key {}</p>\
         <p class=hint>Approve only a device you (or the person you approve it for) just started with \
         <code>tailscale up</code>: the name is what the device calls itself.</p><div class=stack>{}{}</div>",
        esc(&p.hostname),
        p.age_seconds,
        esc(&p.node_key),
        esc(&p.machine_key),
        form(
            csrf,
            "approve",
            &[("auth_id", &p.auth_id)],
            &format!(
                "<label>Approve for user <select name=user required><option value=\"\">choose…</option>{}</select></label> ",
                user_options(users, None)
            ),
            "Approve"
        ),
        form(csrf, "reject", &[("auth_id", &p.auth_id)], "", "Reject"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            id: 3,
            machine_key: String::new(),
            node_key: String::new(),
            disco_key: String::new(),
            ip_addresses: vec!["100.64.0.3".into()],
            name: name.into(),
            given_name: name.into(),
            user: None,
            last_seen: None,
            expiry: None,
            pre_auth_key: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            register_method: String::new(),
            online: true,
            approved_routes: vec![],
            available_routes: vec!["192.168.1.0/24".into()],
            subnet_routes: vec![],
            tags: vec![],
            ephemeral: false,
            os: "linux".into(),
            client_version: "1.90".into(),
        }
    }

    #[test]
    fn device_text_is_escaped_and_every_form_has_the_token() {
        let page = devices(&[node("<script>x</script>")], "tok");
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"));
        let forms = page.matches("<form").count();
        assert_eq!(page.matches("name=csrf value=\"tok\"").count(), forms);
        assert!(page.contains("id=\"online-3\"") && page.contains("192.168.1.0/24"));
        assert!(devices(&[], "t").contains("No devices yet"));
    }
}

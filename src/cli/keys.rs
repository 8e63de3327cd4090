//! `preauthkeys create|list|expire|delete`.

use super::args::{switch, value, Flag, Parsed};
use super::output::{emit, list, table, text, when};
use super::shapes::{self, Deleted};
use super::{fail, no_extra_words, parse, sub, usage_err, Ctx, Failure};
use crate::api::types::{
    ById, CreatePreAuthKeyRequest, Empty, PreAuthKey, PreAuthKeyResponse, PreAuthKeysResponse, UserRef,
};
use crate::clock;
use crate::secrets::AUTH_KEY_PREFIX;
use crate::url::percent_encode;

fn row(k: &PreAuthKey, now: i64) -> Vec<String> {
    let owner = if k.acl_tags.is_empty() { text(k.user.as_ref().map_or("", |u| &u.name)) } else { list(&k.acl_tags) };
    let shown = shapes::PreAuthKey::new(k, now);
    let expiration = if shown.expired { format!("{} (expired)", when(&k.expiration)) } else { when(&k.expiration) };
    vec![
        k.id.to_string(),
        text(&k.key),
        k.reusable.to_string(),
        k.ephemeral.to_string(),
        k.used.to_string(),
        expiration,
        when(&k.created_at),
        owner,
    ]
}

fn all_keys(c: &Ctx, user: Option<&str>) -> Result<Vec<PreAuthKey>, Failure> {
    let q = user.map(|u| format!("?user={}", percent_encode(u))).unwrap_or_default();
    Ok(c.get::<PreAuthKeysResponse>("GET", &format!("/api/v1/preauthkey{q}"))?.pre_auth_keys)
}

/// The key named by `-i ID` or by its text (whole, masked or prefix).
fn pick_key(c: &Ctx, p: &Parsed) -> Result<PreAuthKey, Failure> {
    let keys = all_keys(c, None)?;
    if let Some(id) = p.get("id") {
        let id: u64 = id.parse().map_err(|_| usage_err(format!("{id:?} is not a key id")))?;
        return keys.into_iter().find(|k| k.id == id).ok_or_else(|| fail(format!("no pre-auth key with id {id}")));
    }
    let text = p.words.get(1).ok_or_else(|| usage_err("say which key: --id ID (see `tinyscale preauthkeys list`)"))?;
    let prefix_of = |s: &str| {
        let s = s.strip_prefix(AUTH_KEY_PREFIX).unwrap_or(s);
        s.split('-').next().unwrap_or(s).to_string()
    };
    let want = prefix_of(text);
    keys.into_iter().find(|k| prefix_of(&k.key) == want).ok_or_else(|| fail(format!("no pre-auth key {text:?}")))
}

pub(super) fn preauthkeys(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[
        value("user", Some('u')),
        switch("reusable", None),
        switch("ephemeral", None),
        value("tags", None),
        value("expiration", Some('e')),
        value("id", Some('i')),
    ];
    let (p, c) = parse(args, FLAGS, "preauthkeys")?;
    let verb = sub(&p, "preauthkeys", "create, list, expire, delete")?;
    let now = clock::now_unix();
    match verb.as_str() {
        "create" | "c" | "new" => {
            no_extra_words(&p, 1, "preauthkeys create")?;
            let span = clock::parse_span(p.get("expiration").unwrap_or("1h"))
                .map_err(|e| usage_err(format!("--expiration: {e}")))?;
            let acl_tags = p.list("tags");
            let user = p.get("user").map(|u| UserRef::Text(u.to_string()));
            if user.is_none() && acl_tags.is_empty() {
                return Err(usage_err("say whose key it is: --user NAME (or --tags tag:x for a tagged key)"));
            }
            let body = CreatePreAuthKeyRequest {
                user,
                reusable: p.has("reusable"),
                ephemeral: p.has("ephemeral"),
                expiration: Some(clock::rfc3339(now.saturating_add(span.secs() as i64))),
                acl_tags,
            };
            let r: PreAuthKeyResponse = c.call("POST", "/api/v1/preauthkey", Some(&body))?;
            emit(c.format, &shapes::PreAuthKey::new(&r.pre_auth_key, now), || text(&r.pre_auth_key.key));
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "preauthkeys list")?;
            let keys = all_keys(&c, p.get("user"))?;
            let shown: Vec<_> = keys.iter().map(|k| shapes::PreAuthKey::new(k, now)).collect();
            emit(c.format, &shown, || {
                let rows: Vec<_> = keys.iter().map(|k| row(k, now)).collect();
                table(&["ID", "Key/Prefix", "Reusable", "Ephemeral", "Used", "Expiration", "Created", "Owner"], &rows)
            });
        }
        "expire" => {
            no_extra_words(&p, 2, "preauthkeys expire")?;
            let id = pick_key(&c, &p)?.id;
            let _: Empty = c.call("POST", "/api/v1/preauthkey/expire", Some(&ById { id }))?;
            let k = all_keys(&c, None)?.into_iter().find(|k| k.id == id).ok_or_else(|| fail("the key is gone"))?;
            emit(c.format, &shapes::PreAuthKey::new(&k, now), || format!("Key {id} expired"));
        }
        "delete" | "rm" | "del" => {
            no_extra_words(&p, 2, "preauthkeys delete")?;
            let id = pick_key(&c, &p)?.id;
            let _: Empty = c.get("DELETE", &format!("/api/v1/preauthkey?id={id}"))?;
            emit(c.format, &Deleted { id: Some(id), name: None, deleted: true }, || format!("Key {id} deleted"));
        }
        other => return Err(usage_err(format!("unknown verb `preauthkeys {other}` (create, list, expire, delete)"))),
    }
    Ok(())
}

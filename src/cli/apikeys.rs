//! `apikeys create|list|expire|delete`: keys for the REST API and the admin
//! web UI, in Headscale's format. A key is shown whole only when made.

use super::args::{value, Flag};
use super::output::{emit, table, text, when_opt};
use super::shapes::{self, Deleted};
use super::{no_extra_words, parse, sub, usage_err, Failure};
use crate::api::types::{ApiKeysResponse, CreateApiKeyRequest, CreateApiKeyResponse, Empty, ExpireApiKeyRequest};
use crate::clock;
use crate::url::percent_encode;

pub(super) fn apikeys(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[value("expiration", Some('e')), value("prefix", Some('p'))];
    let (p, c) = parse(args, FLAGS, "apikeys")?;
    let verb = sub(&p, "apikeys", "create, list, expire, delete")?;
    let now = clock::now_unix();
    let prefix = || {
        p.get("prefix").map(str::to_string).ok_or_else(|| {
            usage_err(format!("usage: tinyscale apikeys {verb} --prefix PREFIX (see `tinyscale apikeys list`)"))
        })
    };
    match verb.as_str() {
        "create" | "c" | "new" => {
            no_extra_words(&p, 1, "apikeys create")?;
            let span = clock::parse_span(p.get("expiration").unwrap_or("90d"))
                .map_err(|e| usage_err(format!("--expiration: {e}")))?;
            let body = CreateApiKeyRequest { expiration: Some(clock::rfc3339(now.saturating_add(span.secs() as i64))) };
            let r: CreateApiKeyResponse = c.call("POST", "/api/v1/apikey", Some(&body))?;
            emit(c.format, &r.api_key, || r.api_key.clone());
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "apikeys list")?;
            let r: ApiKeysResponse = c.get("GET", "/api/v1/apikey")?;
            let shown: Vec<_> = r.api_keys.iter().map(|k| shapes::ApiKey::new(k, now)).collect();
            emit(c.format, &shown, || {
                let rows: Vec<Vec<String>> = shown
                    .iter()
                    .map(|k| {
                        let exp = when_opt(k.expiration.as_deref());
                        vec![
                            k.id.to_string(),
                            text(&k.prefix),
                            if k.expired { format!("{exp} (expired)") } else { exp },
                            when_opt(k.created_at.as_deref()),
                            when_opt(k.last_seen.as_deref()),
                        ]
                    })
                    .collect();
                table(&["ID", "Prefix", "Expiration", "Created", "Last seen"], &rows)
            });
        }
        "expire" | "revoke" => {
            no_extra_words(&p, 1, "apikeys expire")?;
            let prefix = prefix()?;
            let body = ExpireApiKeyRequest { prefix: Some(prefix.clone()), id: None };
            let _: Empty = c.call("POST", "/api/v1/apikey/expire", Some(&body))?;
            emit(c.format, &Empty {}, || format!("API key {} expired", text(&prefix)));
        }
        "delete" | "rm" | "del" => {
            no_extra_words(&p, 1, "apikeys delete")?;
            let prefix = prefix()?;
            let _: Empty = c.get("DELETE", &format!("/api/v1/apikey/{}", percent_encode(&prefix)))?;
            emit(c.format, &Deleted { id: None, name: Some(prefix.clone()), deleted: true }, || {
                format!("API key {} deleted", text(&prefix))
            });
        }
        other => return Err(usage_err(format!("unknown verb `apikeys {other}` (create, list, expire, delete)"))),
    }
    Ok(())
}

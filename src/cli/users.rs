//! `users create|list|rename|destroy`.

use super::args::{value, Flag, Parsed};
use super::output::{emit, table, text, when};
use super::shapes::{self, Deleted};
use super::{fail, no_extra_words, parse, sub, usage_err, Ctx, Failure};
use crate::api::types::{CreateUserRequest, Empty, User, UserResponse, UsersResponse};
use crate::url::percent_encode;

const COLUMNS: &[&str] = &["ID", "Name", "Display name", "Email", "Created"];

fn row(u: &User) -> Vec<String> {
    vec![u.id.to_string(), text(&u.name), text(&u.display_name), text(&u.email), when(&u.created_at)]
}

/// The user named by `-i ID` or `-n NAME` (or a bare word).
pub(super) fn pick_user(c: &Ctx, p: &Parsed, word: Option<&String>) -> Result<User, Failure> {
    let q = match (p.get("identifier"), p.get("name"), word) {
        (Some(id), _, _) => format!("id={}", percent_encode(id)),
        (None, Some(n), _) => format!("name={}", percent_encode(n)),
        (None, None, Some(w)) if w.bytes().all(|b| b.is_ascii_digit()) => format!("id={w}"),
        (None, None, Some(w)) => format!("name={}", percent_encode(w)),
        (None, None, None) => return Err(usage_err("say which user: --identifier ID or --name NAME")),
    };
    let r: UsersResponse = c.get("GET", &format!("/api/v1/user?{q}"))?;
    r.users.into_iter().next().ok_or_else(|| fail(format!("no such user ({})", q.replace('=', " "))))
}

pub(super) fn users(args: &[String]) -> Result<(), Failure> {
    const FLAGS: &[Flag] = &[
        value("identifier", Some('i')),
        value("name", Some('n')),
        value("email", Some('e')),
        value("display-name", Some('d')),
        value("picture-url", Some('p')),
        value("new-name", Some('r')),
    ];
    let (p, c) = parse(args, FLAGS, "users")?;
    let verb = sub(&p, "users", "create, list, rename, destroy")?;
    match verb.as_str() {
        "create" | "c" | "new" => {
            let name = p.words.get(1).ok_or_else(|| usage_err("usage: tinyscale users create NAME"))?;
            no_extra_words(&p, 2, "users create")?;
            let body = CreateUserRequest {
                name: name.clone(),
                display_name: p.get("display-name").unwrap_or("").into(),
                email: p.get("email").unwrap_or("").into(),
                picture_url: p.get("picture-url").unwrap_or("").into(),
            };
            let r: UserResponse = c.call("POST", "/api/v1/user", Some(&body))?;
            emit(c.format, &shapes::User::from(&r.user), || {
                format!("User created: {} (id {})", text(&r.user.name), r.user.id)
            });
        }
        "list" | "ls" | "show" => {
            no_extra_words(&p, 1, "users list")?;
            let mut q = Vec::new();
            for (flag, key) in [("identifier", "id"), ("name", "name"), ("email", "email")] {
                if let Some(v) = p.get(flag) {
                    q.push(format!("{key}={}", percent_encode(v)));
                }
            }
            let r: UsersResponse = c.get("GET", &format!("/api/v1/user?{}", q.join("&")))?;
            let shown: Vec<shapes::User> = r.users.iter().map(shapes::User::from).collect();
            emit(c.format, &shown, || table(COLUMNS, &r.users.iter().map(row).collect::<Vec<_>>()));
        }
        "rename" | "mv" => {
            // Headscale's older form: `users rename OLD NEW`.
            let old = pick_user(&c, &p, p.words.get(1))?;
            let new_name = p
                .get("new-name")
                .map(str::to_string)
                .or_else(|| p.words.get(2).cloned())
                .ok_or_else(|| usage_err("say the new name: --new-name NEW"))?;
            let r: UserResponse =
                c.get("POST", &format!("/api/v1/user/{}/rename/{}", old.id, percent_encode(&new_name)))?;
            emit(c.format, &shapes::User::from(&r.user), || {
                format!("User renamed: {} -> {}", text(&old.name), text(&r.user.name))
            });
        }
        "destroy" | "delete" | "rm" => {
            let u = pick_user(&c, &p, p.words.get(1))?;
            c.confirm(&format!("Delete user {:?} (id {}) and its pre-auth keys?", u.name, u.id))?;
            let _: Empty = c.get("DELETE", &format!("/api/v1/user/{}", u.id))?;
            let shown = Deleted { id: Some(u.id), name: Some(u.name.clone()), deleted: true };
            emit(c.format, &shown, || format!("User destroyed: {}", text(&u.name)));
        }
        other => return Err(usage_err(format!("unknown verb `users {other}` (create, list, rename, destroy)"))),
    }
    Ok(())
}

//! Who a login is, and whether they may in: the claims turned into a
//! tinyscale identity (issuer + subject, never a name or an email), the
//! username the seed guide describes, and Headscale's admission filters in
//! Headscale's order.

use super::jwt::Claims;
use crate::config::Oidc;
use crate::state::names::check_username;

pub use crate::state::ExternalIdentity as Identity;

/// Why a login is refused: an HTTP status, what the person sees, and for the
/// admin what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    pub hint: Option<String>,
}

fn refuse(message: impl Into<String>, hint: Option<&str>) -> Refusal {
    Refusal { status: 401, message: message.into(), hint: hint.map(str::to_string) }
}

/// Headscale's identifier: issuer (trailing slash dropped) + `/` + subject.
pub fn provider_id(iss: &str, sub: &str) -> String {
    format!("{}/{}", iss.trim().trim_end_matches('/'), sub.trim().trim_start_matches('/'))
}

fn group_name(g: &str) -> &str {
    g.strip_prefix('/').unwrap_or(g)
}

/// Headscale's filters, in Headscale's order: groups, then (for the email
/// filters) a verified email, then domains, then users.
pub fn admit(c: &Claims, cfg: &Oidc) -> Result<(), Refusal> {
    if !cfg.allowed_groups.is_empty() {
        // authentik sends group names; the guide writes `/headscale`: both match.
        let ok = cfg.allowed_groups.iter().any(|want| c.groups.0.iter().any(|g| group_name(g) == group_name(want)));
        if !ok {
            return Err(refuse(
                "You are not in a group allowed to join this tailnet.",
                Some("add the user to one of oidc.allowed_groups"),
            ));
        }
    }
    let email = c.email.as_deref().unwrap_or("");
    let email_filters = !cfg.allowed_domains.is_empty() || !cfg.allowed_users.is_empty();
    if email_filters && cfg.email_verified_required && !c.email_verified.0 {
        return Err(refuse(
            "Your email address is not verified by the identity provider, so it cannot be checked against the allowed domains and users.",
            Some(
                "authentik sends email_verified: false by default (since 2025.10). Either give the provider an email scope \
                 mapping that returns email_verified: true, or set oidc.email_verified_required: false in tinyscale's config.",
            ),
        ));
    }
    if !cfg.allowed_domains.is_empty() {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !cfg.allowed_domains.iter().any(|d| d == domain) {
            return Err(refuse(
                "Your email domain is not allowed to join this tailnet.",
                Some("see oidc.allowed_domains"),
            ));
        }
    }
    if !cfg.allowed_users.is_empty() && !cfg.allowed_users.iter().any(|u| u == email) {
        return Err(refuse(
            "Your account is not on the list of users allowed to join this tailnet.",
            Some("see oidc.allowed_users"),
        ));
    }
    Ok(())
}

/// Whether the claims name an admin of the web UI: a member of one of
/// `admin.allowed_groups` (read as the device filter reads groups), or one
/// of `admin.allowed_users` by an email the provider verified, always:
/// `oidc.email_verified_required: false` lets devices in, never an admin
/// who set someone else's email on their own account (review 13).
pub fn admit_admin(c: &Claims, admin: &crate::config::Admin) -> Result<(), Refusal> {
    let in_group = admin.allowed_groups.iter().any(|want| c.groups.0.iter().any(|g| group_name(g) == group_name(want)));
    let email = c.email.as_deref().filter(|_| c.email_verified.0);
    let listed = email.is_some_and(|e| admin.allowed_users.iter().any(|u| u.eq_ignore_ascii_case(e)));
    if in_group || listed {
        return Ok(());
    }
    Err(Refusal {
        status: 403,
        message: "You are not an administrator of this tailnet.".into(),
        hint: Some("add the account to admin.allowed_groups or admin.allowed_users in tinyscale's config".into()),
    })
}

fn sanitize(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_')).collect()
}

/// The username, following the seed guide: with `strip_email_domain` set,
/// from the email (`user@acme.net` → `user`, or `user.acme.net`); otherwise
/// `preferred_username` when it is a valid name. Fallbacks keep it non-empty.
pub fn username(c: &Claims, cfg: &Oidc) -> String {
    let email = c.email.as_deref().filter(|e| e.contains('@'));
    let from_email = |strip: bool| {
        email.map(|e| {
            let (local, domain) = e.rsplit_once('@').unwrap_or((e, ""));
            if strip {
                sanitize(local)
            } else {
                sanitize(&format!("{local}.{domain}"))
            }
        })
    };
    let preferred = c.preferred_username.as_deref().filter(|p| check_username(p).is_ok()).map(str::to_string);
    let candidates = match cfg.strip_email_domain {
        Some(strip) => [from_email(strip), preferred, from_email(true)],
        None => [preferred, from_email(true), None],
    };
    candidates
        .into_iter()
        .flatten()
        .find(|n| check_username(n).is_ok())
        .unwrap_or_else(|| format!("user-{}", &crate::secrets::hash_secret(&c.sub)[..8]))
}

pub fn identity(c: &Claims, cfg: &Oidc) -> Identity {
    let email = c.email.clone().filter(|_| c.email_verified.0 || !cfg.email_verified_required).unwrap_or_default();
    Identity {
        provider_id: provider_id(&c.iss, &c.sub),
        username: username(c, cfg),
        display_name: c.name.clone().unwrap_or_default(),
        email_verified: c.email_verified.0 && !email.is_empty(),
        email,
        picture: c.picture.clone().unwrap_or_default(),
    }
}

/// Merges userinfo into the ID token's claims (Headscale: only when the
/// subjects match; non-empty values win).
pub fn merge_userinfo(c: &mut Claims, info: &Claims) {
    if info.sub != c.sub {
        return;
    }
    let pick = |a: &mut Option<String>, b: &Option<String>| {
        if let Some(v) = b.as_ref().filter(|v| !v.is_empty()) {
            *a = Some(v.clone());
        }
    };
    pick(&mut c.email, &info.email);
    pick(&mut c.name, &info.name);
    pick(&mut c.preferred_username, &info.preferred_username);
    pick(&mut c.picture, &info.picture);
    if info.email.is_some() {
        c.email_verified = info.email_verified;
    }
    if !info.groups.0.is_empty() {
        c.groups = info.groups.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwt::{FlexBool, Strings};

    fn cfg() -> Oidc {
        Oidc {
            only_start_if_oidc_is_available: true,
            issuer: "https://auth.example/application/o/ts/".into(),
            client_id: "ts".into(),
            client_secret: None,
            scope: vec!["openid".into()],
            extra_params: Default::default(),
            allowed_domains: vec![],
            allowed_groups: vec![],
            allowed_users: vec![],
            pkce_enabled: false,
            pkce_method: crate::config::PkceMethod::S256,
            strip_email_domain: None,
            email_verified_required: true,
            use_expiry_from_token: false,
        }
    }

    fn claims(user: &str, email: &str, verified: bool, groups: &[&str]) -> Claims {
        Claims {
            iss: "https://auth.example/application/o/ts/".into(),
            sub: format!("sub-{user}"),
            email: Some(email.into()),
            email_verified: FlexBool(verified),
            preferred_username: Some(user.into()),
            groups: Strings(groups.iter().map(|g| g.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn groups_match_with_or_without_the_slash() {
        let mut c = cfg();
        c.allowed_groups = vec!["/headscale".into()];
        assert!(admit(&claims("alice", "alice@example.com", true, &["/headscale"]), &c).is_ok());
        assert!(admit(&claims("bob", "bob@example.com", true, &["headscale"]), &c).is_ok());
        assert_eq!(admit(&claims("dave", "dave@other.example.net", true, &[]), &c).unwrap_err().status, 401);
        // The group check ignores email verification (Headscale's design).
        assert!(admit(&claims("carol", "carol@example.com", false, &["/headscale"]), &c).is_ok());
    }

    #[test]
    fn email_filters_need_a_verified_email_and_say_why() {
        let mut c = cfg();
        c.allowed_domains = vec!["example.com".into()];
        let r = admit(&claims("carol", "carol@example.com", false, &[]), &c).unwrap_err();
        assert!(r.hint.unwrap().contains("email_verified_required"));
        c.email_verified_required = false;
        assert!(admit(&claims("carol", "carol@example.com", false, &[]), &c).is_ok());
        assert!(admit(&claims("dave", "dave@other.example.net", true, &[]), &c).is_err());
        let mut c = cfg();
        c.allowed_users = vec!["alice@example.com".into()];
        assert!(admit(&claims("alice", "alice@example.com", true, &[]), &c).is_ok());
        assert!(admit(&claims("bob", "bob@example.com", true, &[]), &c).is_err());
    }

    #[test]
    fn usernames_follow_the_seed() {
        let mut c = cfg();
        let a = claims("alice", "user@acmecorp.net", true, &[]);
        assert_eq!(username(&a, &c), "alice", "preferred_username by default");
        c.strip_email_domain = Some(true);
        assert_eq!(username(&a, &c), "user");
        c.strip_email_domain = Some(false);
        assert_eq!(username(&a, &c), "user.acmecorp.net");
        // 1erin's preferred_username is invalid: the email's local part stands in.
        let e = claims("1erin", "erin@example.com", true, &[]);
        assert_eq!(username(&e, &cfg()), "erin");
        let nothing = Claims { sub: "x".into(), ..Default::default() };
        assert!(username(&nothing, &cfg()).starts_with("user-"));
        assert_eq!(provider_id("https://a/app/", "/abc"), "https://a/app/abc");
        // An unverified email is not kept when verification is required,
        // and is kept but marked unverified when it is not.
        assert_eq!(identity(&claims("carol", "carol@example.com", false, &[]), &cfg()).email, "");
        let mut lax = cfg();
        lax.email_verified_required = false;
        let carol = identity(&claims("carol", "carol@example.com", false, &[]), &lax);
        assert_eq!((carol.email.as_str(), carol.email_verified), ("carol@example.com", false));
        assert!(identity(&claims("alice", "alice@example.com", true, &[]), &lax).email_verified);
    }

    #[test]
    fn userinfo_merges_only_for_the_same_subject() {
        let mut c = claims("alice", "a@x", false, &[]);
        let mut info = claims("alice", "alice@example.com", true, &["g"]);
        merge_userinfo(&mut c, &info);
        assert_eq!(c.email.as_deref(), Some("alice@example.com"));
        assert!(c.email_verified.0);
        info.sub = "someone-else".into();
        info.email = Some("evil@x".into());
        merge_userinfo(&mut c, &info);
        assert_eq!(c.email.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn admins_are_named_by_group_or_by_a_verified_email_only() {
        let admin = crate::config::Admin {
            allowed_groups: vec!["admins".into()],
            allowed_users: vec!["alice@example.com".into()],
        };
        assert!(admit_admin(&claims("x", "x@example.com", false, &["/admins"]), &admin).is_ok());
        assert!(admit_admin(&claims("alice", "Alice@example.com", true, &[]), &admin).is_ok());
        // Review 13: an unverified email names no admin, whatever
        // oidc.email_verified_required says for devices.
        let r = admit_admin(&claims("mallory", "alice@example.com", false, &["headscale"]), &admin).unwrap_err();
        assert_eq!(r.status, 403);
        assert!(admit_admin(&claims("dave", "dave@example.com", true, &["headscale"]), &admin).is_err());
        assert!(
            admit_admin(&claims("alice", "alice@example.com", true, &[]), &crate::config::Admin::default()).is_err()
        );
    }
}

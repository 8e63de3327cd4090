//! User names and node names: what is allowed and how clashes are settled.

/// Headscale's rule for user names: at least two characters, starting with a
/// letter; letters, digits, `-`, `.`, `_` and at most one `@`.
pub fn check_username(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("a user name cannot be empty".into()),
        Some(c) if !c.is_alphabetic() => return Err(format!("user name {name:?} must start with a letter")),
        _ => {}
    }
    if name.chars().count() < 2 {
        return Err(format!("user name {name:?} is too short (at least 2 characters)"));
    }
    if name.chars().count() > 63 {
        return Err(format!("user name {name:?} is too long (at most 63 characters)"));
    }
    if name.matches('@').count() > 1 {
        return Err(format!("user name {name:?} has more than one @"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '@'))) {
        return Err(format!("user name {name:?} contains {bad:?}; use letters, digits, '-', '.', '_' and one '@'"));
    }
    Ok(())
}

/// A DNS label from a client's hostname: lower case, `[a-z0-9-]`, at most 63
/// characters, no leading or trailing `-`; `node` when nothing is left.
pub fn dns_label(hostname: &str) -> String {
    let mut out = String::with_capacity(hostname.len().min(63));
    for c in hostname.chars() {
        let c = c.to_ascii_lowercase();
        let mapped = if c.is_ascii_alphanumeric() {
            c
        } else if matches!(c, '-' | '_' | '.' | ' ') {
            '-'
        } else {
            continue;
        };
        if mapped == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(mapped);
        if out.len() == 63 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "node".into()
    } else {
        trimmed.to_string()
    }
}

/// Checks a name given by the admin (`nodes rename`): it must already be a valid label.
pub fn check_given_name(name: &str) -> Result<(), String> {
    if dns_label(name) == name {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid node name: use lower-case letters, digits and '-', at most 63, not starting or ending with '-' (e.g. {:?})",
            dns_label(name)
        ))
    }
}

/// `base`, or `base-1`, `base-2`… — the first that `taken` does not claim.
pub fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (1u32..)
        .map(|i| {
            let suffix = format!("-{i}");
            // User names may be any letters ("é" is two bytes).
            let head = crate::text::head_bytes(base, 63 - suffix.len());
            format!("{}{suffix}", head.trim_end_matches('-'))
        })
        .find(|n| !taken(n))
        // The iterator is unbounded and `taken` holds finitely many names.
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_headscale() {
        for ok in ["alice", "al", "bob.smith", "carol_x", "dave-1", "erin@example.com", "Émile"] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "1erin", "a b", "a@b@c", "-x", "x/y", &"x".repeat(64)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    /// Security review of issue 11: a 40-letter accented name that was
    /// taken panicked on a cut inside a letter (from an OIDC login).
    #[test]
    fn a_taken_name_of_wide_letters_gets_a_suffix() {
        let base = "é".repeat(40);
        assert!(check_username(&base).is_ok());
        let n = unique(&base, |n| n == base);
        assert!(n.ends_with("-1") && n.len() <= 63, "{n}");
        assert!(base.starts_with(n.trim_end_matches("-1")));
    }

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(dns_label("Alice's MacBook Pro"), "alices-macbook-pro");
        assert_eq!(dns_label("router.lan"), "router-lan");
        assert_eq!(dns_label("--x--"), "x");
        assert_eq!(dns_label("日本"), "node");
        assert_eq!(dns_label(&"a".repeat(80)).len(), 63);
        assert!(check_given_name("web-1").is_ok());
        assert!(check_given_name("Web 1").is_err());
    }

    #[test]
    fn clashes_get_suffixes() {
        let taken = ["laptop", "laptop-1"];
        assert_eq!(unique("laptop", |n| taken.contains(&n)), "laptop-2");
        assert_eq!(unique("phone", |n| taken.contains(&n)), "phone");
        let long = "a".repeat(63);
        let u = unique(&long, |n| n == long);
        assert_eq!(u.len(), 63);
        assert!(u.ends_with("-1"));
    }
}

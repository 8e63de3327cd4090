//! The pages a person sees during a login: the confirmation step, success,
//! and readable refusals (the details for the admin go to the log and, where
//! the admin can fix something, into a hint on the page).

use crate::web::html_escape as esc;

/// The pages' one inline `<style>` (the shared one); the Content-Security-Policy allows it by its hash.
pub use crate::web::layout::STYLE;

fn page(title: &str, body: &str) -> String {
    crate::web::layout::public_page(title, body)
}

/// Who you are and which device: one POST form whose hidden input carries the CSRF token.
pub fn confirm(auth_id: &str, csrf: &str, user: &str, device: &str) -> String {
    page(
        "Add this device to the tailnet?",
        &format!(
            "<p>You are signed in as <b>{user}</b>.</p><p>The device <b>{device}</b> asks to join the tailnet as yours.</p>\
             <form method=post action=\"/register/confirm/{auth_id}\"><input type=hidden name=csrf value=\"{csrf}\">\
             <button type=submit>Add {device}</button></form>\
             <p>If you did not just run <code>tailscale up</code> on that device, close this page.</p>",
            user = esc(user),
            device = esc(device),
            auth_id = esc(auth_id),
            csrf = esc(csrf),
        ),
    )
}

pub fn success(user: &str, device: &str) -> String {
    page(
        "Device added",
        &format!(
            "<p><b>{device}</b> is now on the tailnet as a device of <b>{user}</b>.</p><p>You can close this window.</p>",
            user = esc(user),
            device = esc(device)
        ),
    )
}

pub fn refused(status: u16, message: &str, hint: Option<&str>) -> String {
    let title = match status {
        401 | 403 => "Login refused",
        410 => "This login has expired",
        s if s >= 500 => "Something went wrong",
        _ => "The login could not be completed",
    };
    let hint = hint.map(|h| format!("<p class=hint>For the administrator: {}</p>", esc(h))).unwrap_or_default();
    page(title, &format!("<p>{}</p>{hint}", esc(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let c = confirm("id1", "tok", "<alice>", "laptop\"");
        assert!(c.contains("&lt;alice&gt;") && c.contains("laptop&quot;"));
        assert_eq!(c.matches("<form method=post").count(), 1);
        assert!(c.contains("name=csrf value=\"tok\""));
        let r = refused(401, "No.", Some("set <x>"));
        assert!(r.contains("Login refused") && r.contains("set &lt;x&gt;"));
        assert!(success("a", "b").contains("close this window"));
        // The policy allows the style by the hash of exactly this text.
        assert!(c.contains(&format!("<style>{STYLE}</style>")));
    }
}

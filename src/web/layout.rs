//! The look every page shares (admin pages, the login pages a device's
//! owner sees, the register page): one small stylesheet and one small
//! script, both inline and allowed by their hashes in the
//! Content-Security-Policy, so nothing else can run or load. Sized for a
//! 360 px phone first: tables scroll inside their box, commands wrap.

use super::html_escape as esc;

/// The one stylesheet.
pub const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--mute:#5b6570;--line:#d5dae0;--acc:#2456c8;--bad:#b3261e;--ok:#1d7a3a}\
@media(prefers-color-scheme:dark){:root{--fg:#e6e9ed;--bg:#16191d;--mute:#9aa4ae;--line:#39414a;--acc:#7aa5ff;--bad:#ff8a80;--ok:#7bd88f}}\
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg)}\
header{display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:center;padding:.6em 1em;border-bottom:1px solid var(--line)}\
header nav{display:flex;flex-wrap:wrap;gap:.2em .9em}header form{margin-left:auto}\
main{max-width:64em;margin:0 auto;padding:0 1em 3em}h1{font-size:1.4em}\
a{color:var(--acc)}.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid var(--line);vertical-align:top}\
th{font-size:.85em;color:var(--mute);font-weight:600}\
pre,code{font:.9em ui-monospace,monospace}pre{white-space:pre-wrap;word-break:break-all;padding:.7em;border:1px solid var(--line);border-radius:6px}\
input,select,textarea,button{font:inherit;padding:.3em .5em;max-width:100%}textarea{width:100%;min-height:20em;font:.9em ui-monospace,monospace}\
button{cursor:pointer}form.inline{display:inline}details{margin:.2em 0}summary{cursor:pointer;color:var(--acc)}\
.on{color:var(--ok)}.off{color:var(--mute)}.bad{color:var(--bad)}.mute{color:var(--mute);font-size:.9em}\
.flash{padding:.6em .8em;border-left:4px solid var(--acc);margin:1em 0}.flash.bad{border-color:var(--bad)}\
.hint{color:var(--mute);border-left:3px solid var(--line);padding-left:.8em}.stack>*{margin:.3em 0}.key{word-break:break-all}";

/// The one script: the devices page's live online column (a poll of
/// `/admin/live`) and the copy buttons. Pages work without it.
pub const SCRIPT: &str = "\
document.querySelectorAll('button[data-copy]').forEach(function(b){b.hidden=false;b.onclick=function(){\
navigator.clipboard.writeText(document.getElementById(b.dataset.copy).textContent)}});\
if(document.body.dataset.live){setInterval(function(){fetch('/admin/live',{credentials:'same-origin'})\
.then(function(r){return r.ok?r.json():null}).then(function(j){if(!j)return;j.nodes.forEach(function(n){\
var c=document.getElementById('online-'+n.id);if(!c)return;c.textContent=n.online?'online':(n.lastSeen||'offline');\
c.className=n.online?'on':'off'})}).catch(function(){})},5000)}";

/// A page of the public side (login, register): no navigation.
pub fn public_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// A message above a page's content, if any.
pub struct Flash<'a> {
    pub text: &'a str,
    pub bad: bool,
}

/// An admin page: navigation, sign-out (a POST with the CSRF token), the
/// flash message and `body`. `live` turns on the online poll.
pub fn admin_page(title: &str, csrf: &str, flash: Option<Flash>, body: &str, live: bool) -> String {
    let nav = [
        ("/admin", "Devices"),
        ("/admin/pending", "Waiting"),
        ("/admin/users", "Users"),
        ("/admin/keys", "Keys"),
        ("/admin/policy", "Policy"),
        ("/admin/apikeys", "API keys"),
        ("/admin/status", "Status"),
    ]
    .iter()
    .map(|(href, name)| format!("<a href={href}>{name}</a>"))
    .collect::<String>();
    let flash = flash
        .map(|f| format!("<p class=\"flash{}\" role=status>{}</p>", if f.bad { " bad" } else { "" }, esc(f.text)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{t} · tinyscale</title><style>{STYLE}</style><body{live}><header><b>tinyscale</b><nav>{nav}</nav>\
         <form method=post action=/admin/logout><input type=hidden name=csrf value=\"{csrf}\"><button>Sign out</button></form></header>\
         <main><h1>{t}</h1>{flash}{body}</main><script>{SCRIPT}</script></body></html>",
        t = esc(title),
        csrf = esc(csrf),
        live = if live { " data-live=1" } else { "" },
    )
}

/// A POST form to `/admin/do` for `op` with the CSRF token, the hidden
/// `fields`, the visible `inputs` (HTML) and a button.
pub fn form(csrf: &str, op: &str, fields: &[(&str, &str)], inputs: &str, button: &str) -> String {
    let hidden: String =
        fields.iter().map(|(k, v)| format!("<input type=hidden name={k} value=\"{}\">", esc(v))).collect();
    format!(
        "<form method=post action=/admin/do class=inline><input type=hidden name=csrf value=\"{}\">\
         <input type=hidden name=op value={op}>{hidden}{inputs}<button>{}</button></form>",
        esc(csrf),
        esc(button)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_carry_the_token() {
        let p = admin_page("<Devices>", "tok\"", Some(Flash { text: "<b>", bad: true }), "", true);
        assert!(p.contains("&lt;Devices&gt;") && p.contains("&lt;b&gt;") && p.contains("tok&quot;"));
        assert!(p.contains("data-live=1") && p.contains(&format!("<style>{STYLE}</style>")));
        assert!(p.contains(&format!("<script>{SCRIPT}</script>")));
        let f = form("t", "rename", &[("id", "3\"")], "<input name=name>", "Rename");
        assert!(
            f.contains("name=op value=rename")
                && f.contains("value=\"3&quot;\"")
                && f.contains("name=csrf value=\"t\"")
        );
        assert!(public_page("Hi", "<p>x</p>").contains("<h1>Hi</h1>"));
    }
}

//! Who may give a node a tag it asks for itself (`tailscale up
//! --advertise-tags`): `tagOwners`. Tags the admin sets are not checked
//! here; they are the admin's to give.

use super::model::{Owner, Policy};
use super::nodes::{UserRef, Users};

impl Policy {
    /// Whether a node may have `tag` because it asked for it: the tag is in
    /// `tagOwners` and one of its owners is the node's user (directly or
    /// through a group) or a tag the node holds already. `users` is every
    /// user of the tailnet, so a token is judged as the policy means it.
    pub fn may_request_tag(&self, tag: &str, user: Option<&UserRef>, node_tags: &[String], users: &[UserRef]) -> bool {
        self.refused_tags(&[tag.to_string()], user, node_tags, users).is_empty()
    }

    /// The tags of `tags` the node may not have ([`Policy::may_request_tag`]
    /// for each), each once. The users are indexed once for all of them:
    /// a device asking for one owned tag a thousand times costs one lookup,
    /// not a thousand indexings of every user.
    pub fn refused_tags(
        &self,
        tags: &[String],
        user: Option<&UserRef>,
        node_tags: &[String],
        users: &[UserRef],
    ) -> Vec<String> {
        let mut asked: Vec<&String> = tags.iter().collect();
        asked.sort_unstable();
        asked.dedup();
        let known = Users::of(&[], users);
        let me = user.and_then(|u| known.index_of(u.id));
        let names_me = |token: &str| me.is_some_and(|me| known.named(token).contains(&me));
        let allowed = |tag: &str| {
            let Some(i) = self.tags.iter().position(|t| t == tag) else { return false };
            self.tag_owners[i].iter().any(|owner| match owner {
                Owner::User(token) => names_me(token),
                Owner::Group(g) => self.groups[*g].members.iter().any(|m| names_me(m)),
                Owner::Tag(t) => node_tags.iter().any(|have| *have == self.tags[*t]),
            })
        };
        asked.into_iter().filter(|t| !allowed(t)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, name: &str, email: Option<&str>) -> UserRef {
        UserRef { id, name: name.into(), email: email.map(str::to_string) }
    }

    #[test]
    fn tag_owners_decide_what_a_node_may_ask_for() {
        let p = Policy::parse(
            r#"{"groups": {"group:parents": ["dad@example.com"]},
                "tagOwners": {"tag:printer": ["alice@"], "tag:media": ["group:parents"],
                              "tag:cam": ["tag:media"], "tag:nobody": []}}"#,
        )
        .unwrap();
        let alice = user(1, "alice", None);
        let dad = user(2, "dad", Some("dad@example.com"));
        let all = [alice.clone(), dad.clone()];
        assert!(p.may_request_tag("tag:printer", Some(&alice), &[], &all));
        assert!(!p.may_request_tag("tag:printer", Some(&dad), &[], &all));
        assert!(p.may_request_tag("tag:media", Some(&dad), &[], &all));
        // A user named like another's email makes the token name nobody.
        let impostor = user(3, "dad@example.com", None);
        let both = [alice.clone(), dad.clone(), impostor.clone()];
        assert!(!p.may_request_tag("tag:media", Some(&impostor), &[], &both));
        assert!(!p.may_request_tag("tag:media", Some(&dad), &[], &both));
        assert!(!p.may_request_tag("tag:cam", Some(&dad), &[], &all), "owned by a tag, not by dad");
        assert!(p.may_request_tag("tag:cam", None, &["tag:media".into()], &all));
        assert!(!p.may_request_tag("tag:nobody", Some(&alice), &[], &all));
        assert!(!p.may_request_tag("tag:unknown", Some(&alice), &[], &all), "a tag not in tagOwners");
        // Two users with one name: the token names nobody.
        let twin = user(4, "alice", None);
        assert!(!p.may_request_tag("tag:printer", Some(&alice), &[], &[alice.clone(), twin]));
    }
}

//! What each alias stands for in a given tailnet: the addresses of the
//! nodes it names, or the literal range. Results are cached per alias, so
//! a name used by many rules is looked up once.

use std::collections::HashMap;

use super::ipset::IpSet;
use super::model::{Alias, Policy};
use super::nodes::{Facts, Users};
use crate::tailcfg::Prefix;

fn prefix(s: &str) -> Prefix {
    s.parse().expect("only called with constant, valid prefix text")
}

/// `*`: the tailnet's addresses, 100.64.0.0/10 (without ChromeOS's
/// 100.115.92.0/23) and fd7a:115c:a1e0::/48.
pub(super) fn wildcard() -> IpSet {
    IpSet::of_prefixes(&[prefix("100.64.0.0/10"), prefix("fd7a:115c:a1e0::/48")]).without(&prefix("100.115.92.0/23"))
}

/// `autogroup:internet`: every public address (no private, tailnet or
/// link-local ranges).
pub(super) fn internet() -> IpSet {
    let mut s = IpSet::of_prefixes(&[prefix("0.0.0.0/0"), prefix("2000::/3")]);
    for p in [
        "fc00::/7",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fd7a:115c:a1e0::/48",
        "100.64.0.0/10",
        "fe80::/10",
        "169.254.0.0/16",
    ] {
        s = s.without(&prefix(p));
    }
    s
}

pub(super) struct Resolver<'a> {
    pub policy: &'a Policy,
    pub facts: &'a [Facts],
    pub users: &'a Users,
    tags: Vec<Option<IpSet>>,
    groups: Vec<Option<IpSet>>,
    named: HashMap<String, IpSet>,
    member: Option<IpSet>,
    tagged: Option<IpSet>,
    wildcard: IpSet,
    internet: IpSet,
}

impl<'a> Resolver<'a> {
    pub fn new(policy: &'a Policy, facts: &'a [Facts], users: &'a Users) -> Resolver<'a> {
        Resolver {
            policy,
            facts,
            users,
            tags: vec![None; policy.tags.len()],
            groups: vec![None; policy.groups.len()],
            named: HashMap::new(),
            member: None,
            tagged: None,
            wildcard: wildcard(),
            internet: internet(),
        }
    }

    fn of_nodes(&self, pick: impl Fn(&Facts) -> bool) -> IpSet {
        IpSet::of_addrs(self.facts.iter().filter(|f| pick(f)).flat_map(|f| f.ips.iter().copied()))
    }

    /// The untagged devices of the users a token names.
    fn user(&mut self, token: &str) -> IpSet {
        if let Some(s) = self.named.get(token) {
            return s.clone();
        }
        let ids = self.users.named(token);
        let s = self.of_nodes(|f| f.user.is_some_and(|u| ids.contains(&u)));
        self.named.insert(token.to_string(), s.clone());
        s
    }

    /// The addresses an alias stands for. `autogroup:self` depends on the
    /// node looking, so it stands for nothing here (see `compile`).
    pub fn resolve(&mut self, a: &Alias) -> IpSet {
        match a {
            Alias::Any => self.wildcard.clone(),
            Alias::Internet => self.internet.clone(),
            Alias::DangerAll => IpSet::everything(),
            Alias::Prefix(p) => IpSet::of_prefixes([p]),
            Alias::SelfDevices => IpSet::new(),
            Alias::User(u) => self.user(u),
            Alias::Member => {
                if self.member.is_none() {
                    self.member = Some(self.of_nodes(|f| !f.tagged));
                }
                self.member.clone().unwrap_or_default()
            }
            Alias::Tagged => {
                if self.tagged.is_none() {
                    self.tagged = Some(self.of_nodes(|f| f.tagged));
                }
                self.tagged.clone().unwrap_or_default()
            }
            Alias::Tag(t) => {
                if self.tags[*t].is_none() {
                    let s = self.of_nodes(|f| f.tags.contains(t));
                    self.tags[*t] = Some(s);
                }
                self.tags[*t].clone().unwrap_or_default()
            }
            Alias::Group(g) => {
                if self.groups[*g].is_none() {
                    let members = self.policy.groups[*g].members.clone();
                    let sets: Vec<IpSet> = members.iter().map(|m| self.user(m)).collect();
                    self.groups[*g] = Some(IpSet::union_all(&sets));
                }
                self.groups[*g].clone().unwrap_or_default()
            }
        }
    }

    pub fn internet_set(&self) -> &IpSet {
        &self.internet
    }

    /// Every approved subnet route of the tailnet, each once, in node order:
    /// what a `*` source adds, kept apart from the merged set because
    /// Tailscale lists a route inside another one on its own.
    pub fn subnet_routes(&self) -> Vec<Prefix> {
        let mut seen = std::collections::HashSet::new();
        self.facts.iter().flat_map(|f| f.subnet.iter()).filter(|r| seen.insert(**r)).copied().collect()
    }
}

//! Verified claims -> the user name and the rooms a connection joins.
//!
//! Templates from `auth.rooms` are parsed once at start with the shared
//! room-template engine (`switchboard_wire::room_template`, also used by the
//! HTTP API, the client room rules and the broadcaster). At CONNECT each is
//! filled from the claims:
//! - `{role}` expands to one room per role found in the `auth.role_claims`
//!   claims (a string or an array of strings; union, deduplicated);
//! - any other `{claim}` is replaced by that claim's string or number value;
//!   `{org.id}` reads the claim literally named `org.id` if there is one,
//!   otherwise the nested `id` of the `org` object;
//! - a template whose claim is missing (or not a string/number) is skipped.
//!
//! The user claim (`auth.user_claim`) is required, `auth.public_rooms` are
//! added as written, and the result is deduplicated in template order.

use std::collections::HashSet;

use serde_json::{Map, Value};
use switchboard_wire::room_template::{self, RoomTemplate, Vars, claim_text};

use super::Refusal;
use crate::config::{AuthConfig, ConfigError};

/// Parses one `auth.rooms` template; an error names `auth.rooms`.
fn parse_template(text: &str) -> Result<RoomTemplate, ConfigError> {
    RoomTemplate::parse(text).map_err(|e| ConfigError::Invalid {
        key: "auth.rooms",
        message: e.to_string(),
    })
}

/// How claims become a user name and rooms; built once from
/// [`AuthConfig`] and shared by all connections.
#[derive(Debug, Clone)]
pub struct RoomPlan {
    templates: Vec<RoomTemplate>,
    public_rooms: Vec<String>,
    role_claims: Vec<String>,
    user_claim: String,
}

/// What [`RoomPlan::resolve`] found for one verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The user claim as a string (`42` -> `"42"`).
    pub user: String,
    /// Rooms to join, deduplicated, template rooms first, then public rooms.
    pub rooms: Vec<String>,
}

impl RoomPlan {
    /// Parses `auth.rooms`; a broken template is an error naming `auth.rooms`.
    pub fn from_config(cfg: &AuthConfig) -> Result<RoomPlan, ConfigError> {
        if cfg.user_claim.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.user_claim",
                message: "must not be empty".into(),
            });
        }
        Ok(RoomPlan {
            templates: cfg
                .rooms
                .iter()
                .map(|t| parse_template(t))
                .collect::<Result<_, _>>()?,
            public_rooms: dedup(cfg.public_rooms.clone()),
            role_claims: cfg.role_claims.clone(),
            user_claim: cfg.user_claim.clone(),
        })
    }

    /// The rooms of an anonymous connection: the public rooms only.
    pub fn public_rooms(&self) -> &[String] {
        &self.public_rooms
    }

    /// The user name and rooms for verified claims.
    ///
    /// Refuses with [`Refusal::MissingClaim`] when the user claim is absent,
    /// null or empty, and [`Refusal::InvalidClaim`] when it is neither a
    /// string nor a number.
    pub fn resolve(&self, claims: &Map<String, Value>) -> Result<Resolved, Refusal> {
        let user = match room_template::claim(claims, &self.user_claim) {
            None | Some(Value::Null) => return Err(Refusal::MissingClaim(self.user_claim.clone())),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(Refusal::MissingClaim(self.user_claim.clone()));
            }
            Some(value) => {
                claim_text(value).ok_or_else(|| Refusal::InvalidClaim(self.user_claim.clone()))?
            }
        };

        let roles = self.roles(claims);
        let vars = Vars {
            claims,
            roles: &roles,
            arg: None,
        };
        let mut rooms = Vec::new();
        for template in &self.templates {
            template.expand(&vars, &mut rooms);
        }
        rooms.extend(self.public_rooms.iter().cloned());
        Ok(Resolved {
            user,
            rooms: dedup(rooms),
        })
    }

    /// Claim names worth keeping in [`super::Identity::claims`]: the user
    /// claim, the role claims and every claim a template reads. A dotted
    /// path keeps both the literal name and its first segment, whichever the
    /// token has.
    pub fn referenced_claims(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        let paths = self
            .templates
            .iter()
            .flat_map(RoomTemplate::variables)
            .filter(|v| *v != room_template::ROLE)
            .chain(self.role_claims.iter().map(String::as_str))
            .chain(std::iter::once(self.user_claim.as_str()));
        for path in paths {
            names.insert(path.to_string());
            if let Some((first, _)) = path.split_once('.') {
                names.insert(first.to_string());
            }
        }
        names
    }

    /// Union of the roles in the role claims, in claim order, deduplicated.
    fn roles(&self, claims: &Map<String, Value>) -> Vec<String> {
        roles_in(claims, &self.role_claims)
    }
}

/// The roles in `role_claims` of `claims` (each a string or an array of
/// strings): their union, in claim order, deduplicated.
pub fn roles_in(claims: &Map<String, Value>, role_claims: &[String]) -> Vec<String> {
    let mut roles = Vec::new();
    for name in role_claims {
        match room_template::claim(claims, name) {
            Some(Value::Array(items)) => roles.extend(items.iter().filter_map(claim_text)),
            Some(value) => roles.extend(claim_text(value)),
            None => {}
        }
    }
    roles.retain(|r| !r.is_empty());
    dedup(roles)
}

/// Keeps the first occurrence of each name, in order.
fn dedup(names: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(names.len());
    names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plan(rooms: &[&str], public: &[&str]) -> RoomPlan {
        RoomPlan::from_config(&AuthConfig {
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            public_rooms: public.iter().map(|s| s.to_string()).collect(),
            ..AuthConfig::default()
        })
        .expect("valid templates")
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("claims must be an object"),
        }
    }

    fn rooms(p: &RoomPlan, c: Value) -> Vec<String> {
        p.resolve(&claims(c)).expect("resolves").rooms
    }

    #[test]
    fn default_templates_with_role_string() {
        let p = RoomPlan::from_config(&AuthConfig::default()).unwrap();
        let r = p.resolve(&claims(json!({"sub": "u1", "role": "admin"})));
        assert_eq!(
            r,
            Ok(Resolved {
                user: "u1".into(),
                rooms: vec!["user:u1".into(), "role:admin".into()],
            })
        );
    }

    #[test]
    fn role_array_and_union_with_role_string_deduplicated() {
        let p = plan(&["user:{sub}", "role:{role}"], &[]);
        assert_eq!(
            rooms(&p, json!({"sub": "u1", "roles": ["editor", "viewer"]})),
            ["user:u1", "role:editor", "role:viewer"]
        );
        assert_eq!(
            rooms(
                &p,
                json!({"sub": "u1", "role": "admin", "roles": ["viewer", "admin", "", true]})
            ),
            ["user:u1", "role:admin", "role:viewer"]
        );
        // No roles: the role template is skipped, not expanded to "role:".
        assert_eq!(rooms(&p, json!({"sub": "u1", "roles": []})), ["user:u1"]);
    }

    #[test]
    fn custom_templates_and_legacy_role_names() {
        let p = plan(&["company:{company_id}", "role_{role}", "{sub}"], &[]);
        assert_eq!(
            rooms(
                &p,
                json!({"sub": 42, "company_id": 7, "roles": ["admin", "agent"]})
            ),
            ["company:7", "role_admin", "role_agent", "42"]
        );
        assert_eq!(p.resolve(&claims(json!({"sub": 42}))).unwrap().user, "42");
    }

    #[test]
    fn template_with_missing_or_unusable_claim_is_skipped() {
        let p = plan(
            &["user:{sub}", "company:{company_id}", "team:{team}:{role}"],
            &[],
        );
        assert_eq!(rooms(&p, json!({"sub": "u1"})), ["user:u1"]);
        assert_eq!(
            rooms(
                &p,
                json!({"sub": "u1", "company_id": {"x": 1}, "team": null, "role": "a"})
            ),
            ["user:u1"]
        );
        assert_eq!(
            rooms(&p, json!({"sub": "u1", "team": "t", "roles": ["a", "b"]})),
            ["user:u1", "team:t:a", "team:t:b"]
        );
    }

    #[test]
    fn nested_and_dotted_claims() {
        let p = plan(&["org:{org.id}", "tenant:{https://x.io/tenant}"], &[]);
        assert_eq!(
            rooms(
                &p,
                json!({"sub": "u", "org": {"id": "o1"}, "https://x.io/tenant": "t9"})
            ),
            ["org:o1", "tenant:t9"]
        );
        // A literal key with dots wins over the nested path.
        assert_eq!(
            rooms(
                &p,
                json!({"sub": "u", "org.id": "lit", "org": {"id": "nested"}})
            ),
            ["org:lit"]
        );
    }

    #[test]
    fn user_claim_is_required() {
        let p = plan(&["user:{sub}"], &[]);
        for c in [json!({}), json!({"sub": null}), json!({"sub": ""})] {
            assert_eq!(
                p.resolve(&claims(c)),
                Err(Refusal::MissingClaim("sub".into()))
            );
        }
        for c in [json!({"sub": true}), json!({"sub": ["a"]})] {
            assert_eq!(
                p.resolve(&claims(c)),
                Err(Refusal::InvalidClaim("sub".into()))
            );
        }
        let custom = RoomPlan::from_config(&AuthConfig {
            user_claim: "uid".into(),
            rooms: vec!["user:{uid}".into()],
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(
            custom.resolve(&claims(json!({"sub": "s"}))),
            Err(Refusal::MissingClaim("uid".into()))
        );
        assert_eq!(
            custom.resolve(&claims(json!({"uid": "x"}))).unwrap().rooms,
            ["user:x"]
        );
    }

    #[test]
    fn public_rooms_are_added_and_everything_deduplicated() {
        let p = plan(
            &["user:{sub}", "{room}", "lobby"],
            &["lobby", "news", "news"],
        );
        assert_eq!(
            rooms(&p, json!({"sub": "u", "room": "user:u"})),
            ["user:u", "lobby", "news"]
        );
        assert_eq!(p.public_rooms(), ["lobby", "news"]);
    }

    #[test]
    fn custom_role_claims() {
        let p = RoomPlan::from_config(&AuthConfig {
            role_claims: vec!["groups".into(), "realm.roles".into()],
            rooms: vec!["g:{role}".into()],
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(
            rooms(
                &p,
                json!({"sub": "u", "role": "ignored", "groups": "ops", "realm": {"roles": ["dev", "ops"]}})
            ),
            ["g:ops", "g:dev"]
        );
    }

    #[test]
    fn bad_templates_name_the_key() {
        for t in ["user:{", "user:}{sub}", "x:{}", "{{sub}}", ""] {
            let err = RoomPlan::from_config(&AuthConfig {
                rooms: vec![t.into()],
                ..AuthConfig::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("auth.rooms"), "{t:?}: {err}");
        }
    }

    #[test]
    fn referenced_claims_cover_templates_roles_and_user() {
        let p = plan(&["c:{company_id}", "o:{org.id}", "r:{role}"], &[]);
        let names = p.referenced_claims();
        for n in ["company_id", "org.id", "org", "role", "roles", "sub"] {
            assert!(names.contains(n), "{n}");
        }
        assert!(!names.contains("email"));
    }
}

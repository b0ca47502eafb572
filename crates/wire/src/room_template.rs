//! Room names from templates: the one engine behind every room-name rule of
//! Switchboard.
//!
//! A template is text with `{variables}`: `user:{sub}`, `role:{role}`,
//! `company:{company_id}`, `chat_{arg}`. It is parsed once (a broken
//! template is an error at start) and filled many times. The same engine
//! serves:
//! - the gateway's `auth.rooms`: claims -> the rooms a connection joins at
//!   CONNECT ([`RoomTemplate::expand`]; `{role}` expands to one room per
//!   role);
//! - the gateway's HTTP API (`users` / `roles` of an emit) and the
//!   broadcaster's `to_user` / `to_role`: one variable filled with a value
//!   ([`RoomTemplate::fill`]);
//! - the gateway's client room rules (`[[client.rooms]] room = "company:{arg}"`),
//!   where `{arg}` is the first argument of the client's event
//!   ([`Vars::arg`]).
//!
//! Claim lookup ([`claim`]) reads the claim literally named `org.id` if
//! there is one, otherwise the nested `id` of the `org` object; a claim
//! value usable in a room name ([`claim_text`]) is a non-empty string or a
//! number.
//!
//! ```
//! use switchboard_wire::room_template::{RoomTemplate, Vars};
//!
//! let t = RoomTemplate::parse("company:{company_id}").unwrap();
//! let claims = serde_json::json!({"sub": "u1", "company_id": 7});
//! let mut rooms = Vec::new();
//! t.expand(&Vars::claims(claims.as_object().unwrap()), &mut rooms);
//! assert_eq!(rooms, ["company:7"]);
//!
//! let user = RoomTemplate::parse("user:{id}").unwrap();
//! assert_eq!(user.fill("id", 42).as_deref(), Some("user:42"));
//! ```

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

/// The variable that expands to one room per role.
pub const ROLE: &str = "role";
/// The variable holding the first argument of a client's event.
pub const ARG: &str = "arg";

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Literal(String),
    /// `{name}`: a variable.
    Var(String),
}

/// Why a template cannot be used; the caller adds the configuration key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}: {reason}")]
pub struct TemplateError {
    /// The template as written.
    pub template: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed room template such as `user:{sub}` or `chat_{arg}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTemplate {
    text: String,
    parts: Vec<Part>,
}

/// What a template's variables are filled from.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// Verified token claims (`{sub}`, `{company_id}`, `{org.id}`).
    pub claims: &'a Map<String, Value>,
    /// The user's roles, for `{role}` (one room per role).
    pub roles: &'a [String],
    /// The event argument, for `{arg}`; without one `{arg}` is a claim
    /// named `arg` like any other.
    pub arg: Option<&'a str>,
}

impl<'a> Vars<'a> {
    /// Claims only: no roles, no argument.
    pub fn claims(claims: &'a Map<String, Value>) -> Self {
        Vars {
            claims,
            roles: &[],
            arg: None,
        }
    }
}

impl RoomTemplate {
    /// Parses `text`; `{` and `}` must pair up around a non-empty name and a
    /// room name must not be empty.
    pub fn parse(text: &str) -> Result<RoomTemplate, TemplateError> {
        let bad = |why: &str| TemplateError {
            template: text.to_string(),
            reason: why.to_string(),
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    break;
                }
                Some(i) if rest[i..].starts_with('}') => return Err(bad("'}' without '{'")),
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let end = after.find('}').ok_or_else(|| bad("'{' without '}'"))?;
                    let name = after[..end].trim();
                    if name.is_empty() || name.contains('{') {
                        return Err(bad("placeholders look like {claim}, {role} or {arg}"));
                    }
                    parts.push(Part::Var(name.to_string()));
                    rest = &after[end + 1..];
                }
            }
        }
        if parts.is_empty() {
            return Err(bad("room names must not be empty"));
        }
        Ok(RoomTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The variables this template reads, in order (repeats included).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Whether the template reads `var`.
    pub fn uses(&self, var: &str) -> bool {
        self.variables().any(|v| v == var)
    }

    /// Whether `var` is the only variable the template reads (at least once).
    pub fn only_uses(&self, var: &str) -> bool {
        self.uses(var) && self.variables().all(|v| v == var)
    }

    /// The room with each variable written by `value` (which appends the
    /// variable's value to the string and returns false when it has none);
    /// `None` when a variable has no value.
    pub fn render(&self, mut value: impl FnMut(&str, &mut String) -> bool) -> Option<String> {
        let mut room = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(text) => room.push_str(text),
                Part::Var(name) => {
                    if !value(name, &mut room) {
                        return None;
                    }
                }
            }
        }
        Some(room)
    }

    /// The room with every `{var}` replaced by `value`; `None` when the
    /// template reads any other variable.
    pub fn fill(&self, var: &str, value: impl fmt::Display) -> Option<String> {
        self.render(|name, out| name == var && write!(out, "{value}").is_ok())
    }

    /// The rooms of this template under `vars`, appended to `out`: one per
    /// role when it reads `{role}` (none without roles), and none when a
    /// variable has no usable value.
    pub fn expand(&self, vars: &Vars<'_>, out: &mut Vec<String>) {
        let fill = |role: Option<&str>, name: &str, room: &mut String| {
            if name == ROLE
                && let Some(role) = role
            {
                room.push_str(role);
                return true;
            }
            if name == ARG
                && let Some(arg) = vars.arg
            {
                room.push_str(arg);
                return true;
            }
            match claim(vars.claims, name).and_then(claim_text) {
                Some(text) => {
                    room.push_str(&text);
                    true
                }
                None => false,
            }
        };
        if self.uses(ROLE) {
            for role in vars.roles {
                out.extend(self.render(|name, room| fill(Some(role), name, room)));
            }
        } else {
            out.extend(self.render(|name, room| fill(None, name, room)));
        }
    }

    /// The one room of this template under `vars` (the first, for `{role}`).
    pub fn expand_one(&self, vars: &Vars<'_>) -> Option<String> {
        let mut out = Vec::with_capacity(1);
        self.expand(vars, &mut out);
        out.into_iter().next()
    }
}

impl fmt::Display for RoomTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A claim by name: the literal key first (URL-style claim names contain
/// dots), then a walk through nested objects along the dots.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// A claim value usable in a room name: a non-empty string, or a number as
/// JSON writes it (`42`, `1.5`). Booleans, null, arrays and objects are not.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn expand(t: &str, claims: Value, roles: &[&str], arg: Option<&str>) -> Vec<String> {
        let claims = obj(claims);
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let mut out = Vec::new();
        RoomTemplate::parse(t).unwrap().expand(
            &Vars {
                claims: &claims,
                roles: &roles,
                arg,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn claims_roles_and_arg() {
        assert_eq!(
            expand("user:{sub}", json!({"sub": "u1"}), &[], None),
            ["user:u1"]
        );
        assert_eq!(
            expand("user:{sub}", json!({"sub": 42}), &[], None),
            ["user:42"]
        );
        assert_eq!(
            expand("role:{role}", json!({}), &["a", "b"], None),
            ["role:a", "role:b"]
        );
        assert!(expand("role:{role}", json!({}), &[], None).is_empty());
        assert_eq!(
            expand(
                "company:{company_id}",
                json!({"company_id": "c1"}),
                &[],
                None
            ),
            ["company:c1"]
        );
        assert_eq!(
            expand("chat_{arg}", json!({}), &[], Some("123")),
            ["chat_123"]
        );
        assert_eq!(
            expand(
                "c:{company_id}:{arg}",
                json!({"company_id": 7}),
                &[],
                Some("x")
            ),
            ["c:7:x"]
        );
        // Without an argument, {arg} is a claim like any other.
        assert_eq!(expand("a:{arg}", json!({"arg": "z"}), &[], None), ["a:z"]);
        assert!(expand("a:{arg}", json!({}), &[], None).is_empty());
    }

    #[test]
    fn missing_or_unusable_claims_give_no_room() {
        for claims in [
            json!({}),
            json!({"c": null}),
            json!({"c": ""}),
            json!({"c": true}),
            json!({"c": [1]}),
            json!({"c": {"x": 1}}),
        ] {
            assert!(
                expand("x:{c}", claims.clone(), &[], None).is_empty(),
                "{claims}"
            );
        }
    }

    #[test]
    fn nested_and_dotted_claims() {
        assert_eq!(
            expand("o:{org.id}", json!({"org": {"id": "o1"}}), &[], None),
            ["o:o1"]
        );
        assert_eq!(
            expand(
                "o:{org.id}",
                json!({"org.id": "lit", "org": {"id": "nested"}}),
                &[],
                None
            ),
            ["o:lit"]
        );
        assert_eq!(
            expand(
                "t:{https://x.io/t}",
                json!({"https://x.io/t": "t9"}),
                &[],
                None
            ),
            ["t:t9"]
        );
    }

    #[test]
    fn fill_one_variable() {
        let t = RoomTemplate::parse("{id}/x/{id}").unwrap();
        assert_eq!(t.fill("id", 7).as_deref(), Some("7/x/7"));
        assert!(t.only_uses("id"));
        let plain = RoomTemplate::parse("plain").unwrap();
        assert_eq!(plain.fill("id", 7).as_deref(), Some("plain"));
        assert!(!plain.uses("id"));
        let two = RoomTemplate::parse("u:{id}:{team}").unwrap();
        assert_eq!(two.fill("id", 1), None);
        assert!(!two.only_uses("id"));
        assert_eq!(two.variables().collect::<Vec<_>>(), ["id", "team"]);
        assert_eq!(two.to_string(), "u:{id}:{team}");
    }

    #[test]
    fn bad_templates() {
        for t in ["user:{", "user:}{sub}", "x:{}", "{{sub}}", "", "x:{ }"] {
            let err = RoomTemplate::parse(t).unwrap_err();
            assert_eq!(err.template, t);
            assert!(err.to_string().contains(&format!("{t:?}")), "{err}");
        }
        // Spaces around a name are trimmed.
        assert_eq!(
            RoomTemplate::parse("u:{ sub }")
                .unwrap()
                .fill("sub", 1)
                .as_deref(),
            Some("u:1")
        );
    }
}

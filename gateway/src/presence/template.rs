//! `presence.online_rooms` templates: `company:{company_id}` filled from a
//! user's claims (the `auth.rooms` syntax without `{role}`).

use serde_json::{Map, Value};

use crate::config::ConfigError;

/// A parsed online-room template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineTemplate {
    /// Literal text and claim names, alternating (`(literal, claim)`).
    parts: Vec<(String, Option<String>)>,
}

impl OnlineTemplate {
    /// Parses `text`; errors name `presence.online_rooms`.
    pub fn parse(text: &str) -> Result<OnlineTemplate, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid {
            key: "presence.online_rooms",
            message: format!("template {text:?}: {why}"),
        };
        if text.is_empty() {
            return Err(bad("room names must not be empty"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        loop {
            match rest.find(['{', '}']) {
                None => {
                    parts.push((rest.to_string(), None));
                    break;
                }
                Some(i) if rest[i..].starts_with('}') => return Err(bad("'}' without '{'")),
                Some(i) => {
                    let after = &rest[i + 1..];
                    let end = after.find('}').ok_or_else(|| bad("'{' without '}'"))?;
                    let name = after[..end].trim();
                    if name.is_empty() || name.contains('{') {
                        return Err(bad("placeholders look like {claim}"));
                    }
                    if name == "role" {
                        return Err(bad("{role} is not supported here"));
                    }
                    parts.push((rest[..i].to_string(), Some(name.to_string())));
                    rest = &after[end + 1..];
                }
            }
        }
        Ok(OnlineTemplate { parts })
    }

    /// The room for these claims; `None` when a claim is missing or is not
    /// a non-empty string or a number.
    pub fn expand(&self, claims: &Map<String, Value>) -> Option<String> {
        let mut room = String::new();
        for (literal, claim) in &self.parts {
            room.push_str(literal);
            if let Some(name) = claim {
                match claims.get(name)? {
                    Value::String(s) if !s.is_empty() => room.push_str(s),
                    Value::Number(n) => room.push_str(&n.to_string()),
                    _ => return None,
                }
            }
        }
        Some(room)
    }

    /// Claim names this template reads.
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|(_, c)| c.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_from_claims_and_skips_missing_ones() {
        let t = OnlineTemplate::parse("company:{company_id}").unwrap();
        let claims = serde_json::json!({"company_id": "c1", "n": 7});
        let claims = claims.as_object().unwrap();
        assert_eq!(t.expand(claims).as_deref(), Some("company:c1"));
        let n = OnlineTemplate::parse("n{n}x").unwrap();
        assert_eq!(n.expand(claims).as_deref(), Some("n7x"));
        let missing = OnlineTemplate::parse("team:{team}").unwrap();
        assert_eq!(missing.expand(claims), None);
        for bad in ["", "a{", "a}", "{}", "t:{role}"] {
            assert!(OnlineTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }
}

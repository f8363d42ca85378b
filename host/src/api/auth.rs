//! Bearer-token authentication and role checks.
//!
//! Roles: `read` (GET calls); `publish` (also publish messages); `consume`
//! (also lease and settle messages of pull subscriptions); `admin`
//! (everything: topics, plugins, subscriptions). With no token
//! configured every caller is admin — [`crate::config`] only allows that on a
//! loopback address. Health endpoints never reach this module.

use super::error::ApiError;
use crate::config::{Secret, Tokens};
use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, Method};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Publish,
    Consume,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Publish => "publish",
            Role::Consume => "consume",
            Role::Admin => "admin",
        }
    }

    /// The role a call needs: GETs need `read`; a POST to a route of the
    /// `publish` or `consume` role (`route`) needs that role; every other
    /// change needs `admin`.
    pub fn required(method: &Method, route: Option<Role>) -> Role {
        if method == Method::GET {
            Role::Read
        } else if let (Some(role), true) = (route, method == Method::POST) {
            role
        } else {
            Role::Admin
        }
    }

    /// Whether a token of this role may make a call that needs `needed`.
    fn permits(self, needed: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Read => needed == Role::Read,
            Role::Publish | Role::Consume => needed == Role::Read || needed == self,
        }
    }
}

/// The configured tokens, ready to check requests against.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Vec<(Secret, Role)>,
}

impl Auth {
    pub fn new(tokens: &Tokens) -> Self {
        let roles = [
            (&tokens.admin, Role::Admin),
            (&tokens.publish, Role::Publish),
            (&tokens.consume, Role::Consume),
            (&tokens.read, Role::Read),
        ];
        let tokens = roles
            .into_iter()
            .filter_map(|(token, role)| token.clone().map(|t| (t, role)))
            .collect();
        Self { tokens }
    }

    /// Check that the request carries a token whose role is at least `needed`.
    pub fn check(&self, headers: &HeaderMap, needed: Role) -> Result<Role, ApiError> {
        if self.tokens.is_empty() {
            return Ok(Role::Admin);
        }
        let presented = bearer(headers)?;
        // Compare against every token without stopping early, so timing does
        // not tell which one (or how much of one) matched.
        let mut role = None;
        for (secret, r) in &self.tokens {
            if constant_time_eq(secret.expose().as_bytes(), presented.as_bytes()) {
                role = Some(*r);
            }
        }
        let role = role.ok_or_else(|| ApiError::unauthorized("unknown bearer token"))?;
        if !role.permits(needed) {
            return Err(ApiError::forbidden(format!(
                "this call needs the {} role; the token has the {} role",
                needed.name(),
                role.name()
            )));
        }
        Ok(role)
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing =
        || ApiError::unauthorized("missing bearer token: send `Authorization: Bearer <token>`");
    let value = headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// Equality whose running time depends on the lengths only, not the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(admin: Option<&str>, publish: Option<&str>, read: Option<&str>) -> Auth {
        Auth::new(&Tokens {
            admin: admin.map(Secret::new),
            publish: publish.map(Secret::new),
            read: read.map(Secret::new),
            consume: admin.map(|_| Secret::new("con")),
        })
    }

    /// `expected`: `Ok(role)` or `Err(status)`.
    fn check(auth: &Auth, header: Option<&str>, needed: Role, expected: Result<Role, u16>) {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert(AUTHORIZATION, h.parse().expect("test header"));
        }
        let got = auth.check(&headers, needed).map_err(|e| e.status.as_u16());
        assert_eq!(got, expected, "header {header:?}, needed {needed:?}");
    }

    #[test]
    fn without_tokens_everyone_is_admin() {
        let open = auth(None, None, None);
        check(&open, None, Role::Admin, Ok(Role::Admin));
        check(&open, Some("Bearer whatever"), Role::Admin, Ok(Role::Admin));
    }

    #[test]
    fn tokens_are_required_and_checked() {
        let a = auth(Some("adm"), Some("pub"), Some("rd"));
        check(&a, None, Role::Read, Err(401));
        check(&a, Some("Bearer"), Role::Read, Err(401));
        check(&a, Some("Basic adm"), Role::Read, Err(401));
        check(&a, Some("Bearer nope"), Role::Read, Err(401));
        check(&a, Some("Bearer ad"), Role::Read, Err(401));
        check(&a, Some("Bearer adm"), Role::Admin, Ok(Role::Admin));
        check(&a, Some("bearer  adm "), Role::Admin, Ok(Role::Admin));
    }

    #[test]
    fn roles_limit_what_a_token_may_do() {
        let a = auth(Some("adm"), Some("pub"), Some("rd"));
        check(&a, Some("Bearer pub"), Role::Publish, Ok(Role::Publish));
        check(&a, Some("Bearer pub"), Role::Read, Ok(Role::Publish));
        check(&a, Some("Bearer pub"), Role::Admin, Err(403));
        check(&a, Some("Bearer rd"), Role::Read, Ok(Role::Read));
        check(&a, Some("Bearer rd"), Role::Publish, Err(403));
        check(&a, Some("Bearer rd"), Role::Admin, Err(403));
        check(&a, Some("Bearer adm"), Role::Publish, Ok(Role::Admin));
        check(&a, Some("Bearer con"), Role::Consume, Ok(Role::Consume));
        check(&a, Some("Bearer con"), Role::Read, Ok(Role::Consume));
        check(&a, Some("Bearer con"), Role::Publish, Err(403));
        check(&a, Some("Bearer pub"), Role::Consume, Err(403));
        check(&a, Some("Bearer adm"), Role::Consume, Ok(Role::Admin));
    }

    #[test]
    fn required_role_follows_the_method() {
        let publish = Some(Role::Publish);
        assert_eq!(Role::required(&Method::GET, None), Role::Read);
        assert_eq!(Role::required(&Method::GET, publish), Role::Read);
        assert_eq!(Role::required(&Method::POST, publish), Role::Publish);
        assert_eq!(
            Role::required(&Method::POST, Some(Role::Consume)),
            Role::Consume
        );
        assert_eq!(Role::required(&Method::POST, None), Role::Admin);
        assert_eq!(Role::required(&Method::PUT, None), Role::Admin);
        assert_eq!(Role::required(&Method::DELETE, None), Role::Admin);
    }
}

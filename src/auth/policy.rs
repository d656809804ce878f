//! What each role may call. Routes a subscriber may call are further narrowed by the handlers to
//! its own subscriber id ([`Principal::owns`](super::Principal::owns)).

use crate::store::Role;

/// Whether `role` may call `method path`, where `path` is the route's template under
/// `/api/v1/reporting` (e.g. `/subscriptions/{id}`).
pub fn rest_allows(role: Role, method: &str, path: &str) -> bool {
    let path = path.strip_prefix("/api/v1/reporting").unwrap_or(path);
    match role {
        Role::Admin => true,
        Role::Publisher => matches!((method, path), ("POST", "/deliver") | ("GET", "/delivery/{delivery_id}/status")),
        Role::Subscriber => matches!(
            (method, path),
            ("POST", "/subscribe")
                | ("GET" | "PUT" | "DELETE", "/subscriptions/{id}")
                | ("GET", "/delivery/{delivery_id}/status")
                | ("GET", "/notifications/{subscriber_id}")
                | ("GET", "/stream")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_reaches_its_routes_only() {
        assert!(rest_allows(Role::Admin, "POST", "/api/v1/reporting/channels"));
        assert!(rest_allows(Role::Publisher, "POST", "/api/v1/reporting/deliver"));
        assert!(!rest_allows(Role::Publisher, "POST", "/api/v1/reporting/channels"));
        assert!(!rest_allows(Role::Publisher, "POST", "/api/v1/reporting/subscribe"));
        assert!(rest_allows(Role::Subscriber, "PUT", "/subscriptions/{id}"));
        assert!(!rest_allows(Role::Subscriber, "POST", "/deliver"));
        assert!(!rest_allows(Role::Subscriber, "GET", "/dead-letters"));
        assert!(!rest_allows(Role::Subscriber, "GET", "/audit"));
        assert!(!rest_allows(Role::Subscriber, "POST", "/keys"));
    }
}

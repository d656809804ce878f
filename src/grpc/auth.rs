//! Credentials on gRPC: `authorization: Bearer <credential>` metadata, checked at the start of
//! every `ReportingStream` and `DistributionQuery` call (the handlers then narrow a subscriber to
//! its own data). Health and reflection are separate services and need none.
//!
//! Done in the handlers rather than a tonic interceptor because interceptors are synchronous and
//! a key is looked up in the store; the handlers also need the principal to scope their answers.

use tonic::{Request, Status};

use super::GrpcState;
use crate::auth::{bearer, AuthError, Principal};
use crate::store::Role;

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        match error {
            AuthError::Missing | AuthError::Invalid(_) | AuthError::Revoked => Status::unauthenticated(error.to_string()),
            AuthError::Forbidden(_) => Status::permission_denied(error.to_string()),
            AuthError::Store(e) => e.into(),
        }
    }
}

impl GrpcState {
    /// The caller of `method` (e.g. `ReportingStream/ManageSubscription`), if its role is one of `roles`.
    pub(crate) async fn caller<T>(&self, request: &Request<T>, method: &str, roles: &[Role]) -> Result<Principal, Status> {
        let credential = request.metadata().get("authorization").map(|value| {
            value.to_str().ok().and_then(bearer).unwrap_or("\u{0}").to_string()
        });
        let target = format!("gRPC {method}");
        let principal = match self.auth.authenticate(credential.as_deref()).await {
            Ok(principal) => principal,
            Err(error) => {
                if !matches!(error, AuthError::Store(_)) {
                    self.auth.auditor().denied(None, target, &error);
                }
                return Err(error.into());
            }
        };
        if !roles.contains(&principal.role) {
            let error = AuthError::Forbidden(format!("call {method} (role {})", principal.role.as_str()));
            self.auth.auditor().denied(Some(&principal), target, &error);
            return Err(error.into());
        }
        Ok(principal)
    }
}

/// Every role.
pub(crate) const ANYONE: &[Role] = &[Role::Admin, Role::Publisher, Role::Subscriber];
/// Admins and subscribers (for their own data).
pub(crate) const SUBSCRIBERS: &[Role] = &[Role::Admin, Role::Subscriber];
pub(crate) const ADMINS: &[Role] = &[Role::Admin];

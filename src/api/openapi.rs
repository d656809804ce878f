//! The OpenAPI 3 document, generated from the handlers' and types' annotations.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "repdist", description = "Report distribution service: subscriptions, report publication, delivery tracking"),
    paths(
        super::subscriptions::subscribe,
        super::subscriptions::list,
        super::subscriptions::update,
        super::subscriptions::cancel,
        super::deliveries::deliver,
        super::deliveries::status,
        super::deliveries::summary,
        super::dead_letters::list,
        super::dead_letters::replay,
        super::stats::current,
        super::notifications::list,
        super::stream::stream,
        super::channels::list,
        super::channels::create,
        super::channels::get,
        super::channels::enable,
        super::channels::disable,
        super::endpoints::list,
        super::templates::list,
        super::templates::put,
        super::templates::delete,
        super::analytics::list,
        super::analytics::analysis,
        super::analytics::query,
        super::keys::create,
        super::keys::list,
        super::keys::revoke,
        super::audit::list,
        super::ops::healthz,
        super::ops::metrics,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Every `/api/v1/reporting` operation needs `Authorization: Bearer <API key or JWT>`; health,
/// metrics and this document do not.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An API key (`rd_...`) or a JWT")).build()),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/reporting") {
                continue;
            }
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                for (code, description) in [("401", "No credential, or not a valid one"), ("403", "The credential's role may not do this")] {
                    responses.entry(code.to_string()).or_insert_with(|| {
                        utoipa::openapi::ResponseBuilder::new()
                            .description(description)
                            .content("application/json", utoipa::openapi::ContentBuilder::new().schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody"))).build())
                            .build()
                            .into()
                    });
                }
            }
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

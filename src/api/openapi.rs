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
        super::ops::healthz,
        super::ops::metrics,
    ),
    components(schemas(super::error::ErrorBody))
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

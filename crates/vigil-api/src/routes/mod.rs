//! The route table: every route once, from which both the router and the OpenAPI document are
//! built, so the two cannot drift apart.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;

pub(crate) mod auth;
pub(crate) mod events;
pub(crate) mod integrity;
pub(crate) mod keys;
pub(crate) mod ops;
pub(crate) mod schemas;
pub(crate) mod users;

/// The path of `POST /v1/events`, which applies the request timeout itself (see `router`).
pub(crate) const INGEST_PATH: &str = "/v1/events";

/// Declares the routes: `method "path" => handler;`. Generates [`ROUTES`], [`add_routes`] and
/// the [`ApiDoc`] OpenAPI derive from the same list.
macro_rules! route_table {
    ($($method:ident $path:literal => $($handler:ident)::+;)*) => {
        /// Every route as `(method, path)`, in the order declared.
        #[cfg(test)]
        pub(crate) const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// Registers every route of the table on `router`.
        pub(crate) fn add_routes(router: Router<AppState>) -> Router<AppState> {
            router$(.route($path, axum::routing::$method($($handler)::+)))*
        }

        /// The OpenAPI document of every route of the table.
        #[derive(OpenApi)]
        #[openapi(
            info(
                title = "vigil",
                description = "Audit log and security event service: ingest, query and export tamper-evident events.",
                license(name = "Apache-2.0"),
            ),
            paths($($($handler)::+),*),
            components(schemas(crate::error::ErrorBody, crate::error::ErrorObject, crate::error::ItemErrorDoc)),
            modifiers(&BearerAuth),
            tags(
                (name = "events", description = "Ingest, query, count and export events"),
                (name = "integrity", description = "Signed checkpoints and Merkle proofs (tamper evidence)"),
                (name = "schemas", description = "Per-type JSON Schemas checked at ingest"),
                (name = "auth", description = "Tokens for API keys and users"),
                (name = "admin", description = "API keys and users (scope admin)"),
                (name = "ops", description = "Health, readiness, metrics and this document (no auth)"),
            ),
        )]
        pub(crate) struct ApiDoc;
    };
}

route_table! {
    post "/v1/events" => events::ingest;
    get "/v1/events" => events::list;
    get "/v1/events/count" => events::count;
    get "/v1/events/{id}" => events::get_one;
    get "/v1/checkpoint" => integrity::checkpoint;
    get "/v1/checkpoint/key" => integrity::signing_key;
    get "/v1/proof/consistency" => integrity::consistency;
    get "/v1/schemas" => schemas::list;
    put "/v1/schemas/{type}" => schemas::put;
    get "/v1/schemas/{type}" => schemas::get;
    delete "/v1/schemas/{type}" => schemas::delete;
    post "/v1/auth/token" => auth::token;
    post "/v1/keys" => keys::create;
    get "/v1/keys" => keys::list;
    delete "/v1/keys/{id}" => keys::revoke;
    post "/v1/users" => users::create;
    get "/v1/users" => users::list;
    delete "/v1/users/{username}" => users::delete;
    get "/healthz" => ops::healthz;
    get "/readyz" => ops::readyz;
    get "/metrics" => ops::metrics;
    get "/openapi.json" => ops::openapi_json;
}

/// Adds the `bearer` security scheme that authenticated operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`vgl_…`) or a JWT from POST /v1/auth/token",
                    ))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn documented() -> BTreeSet<(String, String)> {
        let doc = crate::openapi();
        let mut out = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let methods = [
                ("get", item.get.is_some()),
                ("put", item.put.is_some()),
                ("post", item.post.is_some()),
                ("delete", item.delete.is_some()),
                ("patch", item.patch.is_some()),
                ("head", item.head.is_some()),
                ("options", item.options.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    out.insert((method.to_owned(), path.clone()));
                }
            }
        }
        out
    }

    /// The router is built from `ROUTES` alone (see `route_table!`); this pins that every
    /// route of the table is documented with the same method and path, and that the document
    /// has no operation the router lacks.
    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(routed.len(), ROUTES.len(), "a route is declared twice");
        assert_eq!(routed, documented());
    }

    /// The timeout middleware finds the ingest route by this constant; the route table must
    /// declare it so.
    #[test]
    fn the_ingest_path_is_routed_for_post() {
        assert!(ROUTES.contains(&("post", INGEST_PATH)));
    }

    #[test]
    fn operation_ids_are_unique() {
        let json = serde_json::to_value(crate::openapi()).unwrap();
        let mut ids = BTreeSet::new();
        for item in json["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "operationId {id} is used twice");
            }
        }
        assert_eq!(ids.len(), ROUTES.len());
    }

    #[test]
    fn authenticated_operations_declare_the_bearer_scheme() {
        let doc = crate::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = [
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/openapi.json",
                    "/v1/checkpoint/key",
                ]
                .contains(&path.as_str());
                let secured = op.get("security").is_some();
                assert_eq!(secured, !public, "{method} {path}");
            }
        }
    }
}

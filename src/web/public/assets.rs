//! Static assets, compiled into the binary so `cargo run` works from any folder.

use std::sync::LazyLock;

use actix_web::{HttpRequest, HttpResponse, http::header::ContentType, web};

use crate::web::{errors::AppError, http};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../static/app.css"),
    },
    Asset {
        name: "live.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../static/live.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../static/favicon.svg"),
    },
];

/// A hash over every asset: pages link `/static/x?v=<this>`, so assets can be cached for a year.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    let all: Vec<u8> = ASSETS.iter().flat_map(|a| a.body.iter().copied()).collect();
    http::etag_of(&all).trim_matches('"')[..12].to_owned()
});

/// `GET /static/{name}`.
pub async fn serve(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, AppError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name.as_str())
        .ok_or(AppError::NotFound)?;
    let content_type: actix_web::mime::Mime =
        asset.content_type.parse().map_err(|_| AppError::NotFound)?;
    Ok(http::cacheable(
        &req,
        ContentType(content_type),
        asset.body,
        "public, max-age=31536000, immutable",
    ))
}

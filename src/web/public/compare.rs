//! `GET /compare`: the latest `statecart compare` report of this data dir, or how to make one.
//! Stateless: it reads a file, never a session, so it never sets a cookie.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use anyhow::Context as _;
use askama::Template;

use crate::web::Tab;
use crate::web::{Chrome, Site, errors::AppError, http};
use crate::{
    compare::{REPORT_HTML, default_out_dir},
    config::Settings,
};

#[derive(Template)]
#[template(path = "compare.html")]
struct NoReportPage<'a> {
    chrome: Chrome<'a>,
    /// Where the report goes, relative to the data dir: a public page never shows the
    /// server's own paths.
    report_path: &'static str,
}

/// `GET /compare`: `<data_dir>/compare/report.html` as written, else a page on how to produce it.
pub async fn page(
    req: HttpRequest,
    site: web::Data<Site>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, AppError> {
    let path = default_out_dir(&settings.data_dir).join(REPORT_HTML);
    let shown = path.display().to_string();
    let read = web::block(move || std::fs::read(path))
        .await
        .context("reading the compare report")?;
    let body = match read {
        Ok(report) => report,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => NoReportPage {
            chrome: Chrome::public(&site, Tab::Compare),
            report_path: "<data_dir>/compare/report.html",
        }
        .render()?
        .into_bytes(),
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("reading {shown}"))
                .into());
        }
    };
    // The report changes only when `compare` runs again; the ETag makes rechecking cheap.
    Ok(http::cacheable(
        &req,
        header::ContentType::html(),
        body,
        http::PUBLIC_CACHE_CONTROL,
    ))
}

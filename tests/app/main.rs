//! The app's integration tests, one module per behaviour family, in one test binary: each test
//! binary links the whole stack, so one link instead of eleven keeps a build on two cores short.
//! Test names read `<family>::<test>::<backend>`, e.g. `cart::checkout_answers_409_when_stock_ran_out_after_adding::redis`.
//! The browser journeys are a binary of their own (`tests/browser`).

#[path = "../common/mod.rs"]
#[macro_use]
mod common;

mod account;
mod cart;
mod cluster;
mod compare;
mod config;
mod drain;
mod edges;
mod hostile;
mod instances;
mod live;
mod metrics;
mod outage;
mod parallel;
mod session_store;
mod sessions;
mod stateless;

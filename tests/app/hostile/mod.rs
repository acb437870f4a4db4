//! Hostile input, kept as a suite: what an attack campaign tried against the release binary,
//! family by family, on every backend. Every case asserts its expected status and that it was
//! no 5xx; after each family the process still answers, no handler panicked, and the refused
//! requests changed nothing (the victim's cart, orders, accounts, the catalog).

mod driver;

mod cardinality;
mod cookies;
mod forms;
mod limits;
mod protocol;

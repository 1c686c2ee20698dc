//! The rate limits against a real Redis, shared by two "instances" (two stores, each with
//! its own connection, as two services have), and with Redis stopped or blackholed.

mod fallback;
mod gcra;
mod helpers;
mod window;

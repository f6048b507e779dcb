//! `echo`: the response body is the request body, byte for byte.

use super::{HandlerError, Reply};

pub const METHOD: &str = "echo";

pub fn call(body: &[u8], reply: &mut Reply<'_>) -> Result<(), HandlerError> {
    reply.body(body)
}

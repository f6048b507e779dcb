//! `echo`: the response body is the request body, byte for byte.

use super::{HandlerError, Reply};

pub(crate) const METHOD: &str = "echo";

pub(crate) fn call(body: &[u8], reply: &mut Reply<'_>) -> Result<(), HandlerError> {
    reply.body(body)
}

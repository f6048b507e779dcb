//! `holdfast publish`: a person's way to publish, over the admin listener's `POST /publish`
//! (ureq: a small, well-kept blocking HTTP client).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;

/// How long the command waits for the server.
pub const PUBLISH_CMD_TIMEOUT_MS: u64 = 5_000;

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// Admin listener of the server.
    #[arg(long, default_value = "127.0.0.1:9878")]
    pub admin: SocketAddr,
    /// Publish on this topic.
    #[arg(long, group = "target")]
    pub topic: Option<String>,
    /// Publish to every session.
    #[arg(long, group = "target")]
    pub broadcast: bool,
    /// Publish to one connection (the session id from Welcome).
    #[arg(long, group = "target")]
    pub conn: Option<u64>,
    /// Publish to every session of a client id.
    #[arg(long, group = "target")]
    pub client: Option<String>,
    /// The payload, as text.
    #[arg(long)]
    pub payload: String,
    /// Names the publish for a retry: in JetStream cluster mode a publish retried with the same
    /// id (after a 503 or a lost answer, through any host) is stored once.
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Bearer secret (the server's publish_secret).
    #[arg(long, env = "HOLDFAST_PUBLISH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// Builds the JSON body for `args`.
pub fn body(args: &PublishArgs) -> Result<serde_json::Value, String> {
    let payload_base64 = base64::engine::general_purpose::STANDARD.encode(args.payload.as_bytes());
    let target = match (&args.topic, args.broadcast, args.conn, &args.client) {
        (Some(topic), false, None, None) => serde_json::json!({"target": "topic", "topic": topic}),
        (None, true, None, None) => serde_json::json!({"target": "broadcast"}),
        (None, false, Some(conn), None) => serde_json::json!({"target": "conn", "conn_id": conn}),
        (None, false, None, Some(client)) => {
            serde_json::json!({"target": "client", "client_id": client})
        }
        _ => return Err("name one target: --topic, --broadcast, --conn or --client".to_owned()),
    };
    let mut body = target;
    body["payload_base64"] = serde_json::Value::String(payload_base64);
    if let Some(msg_id) = &args.msg_id {
        body["msg_id"] = serde_json::Value::String(msg_id.clone());
    }
    Ok(body)
}

/// Publishes; prints the server's answer. Ok(true) when the server accepted it.
pub fn run(args: &PublishArgs) -> Result<bool, String> {
    let body = body(args)?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(PUBLISH_CMD_TIMEOUT_MS))
        .build();
    let mut request = agent.post(&format!("http://{}/publish", args.admin));
    if let Some(secret) = &args.secret {
        request = request.set("Authorization", &format!("Bearer {secret}"));
    }
    match request.send_json(body) {
        Ok(response) => {
            println!(
                "{} {}",
                response.status(),
                response.into_string().unwrap_or_default().trim()
            );
            Ok(true)
        }
        Err(ureq::Error::Status(status, response)) => {
            println!(
                "{status} {}",
                response.into_string().unwrap_or_default().trim()
            );
            Ok(false)
        }
        Err(e) => Err(format!("cannot reach {}: {e}", args.admin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PublishArgs,
    }

    #[test]
    fn exactly_one_target_is_required() {
        assert!(
            Cli::try_parse_from(["x", "--topic", "a", "--broadcast", "--payload", "p"]).is_err()
        );
        let cli = Cli::try_parse_from(["x", "--conn", "7", "--payload", "hi"]).unwrap();
        let body = body(&cli.args).unwrap();
        assert_eq!(body["target"], "conn");
        assert_eq!(body["conn_id"], 7);
        assert_eq!(body["payload_base64"], "aGk=");
        assert!(body.get("msg_id").is_none());
        let cli = Cli::try_parse_from(["x", "--topic", "a", "--payload", "p", "--msg-id", "m-1"])
            .unwrap();
        assert_eq!(super::body(&cli.args).unwrap()["msg_id"], "m-1");
    }
}

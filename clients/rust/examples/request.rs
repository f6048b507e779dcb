//! Calls a method and prints the answer, then sends an acked event.
//!
//! ```text
//! cargo run -p holdfast-client --example request -- 127.0.0.1:7878 echo 'hello'
//! ```

use std::time::Duration;

use holdfast_client::{Client, ClientConfig, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let method = args.next().unwrap_or_else(|| "echo".to_owned());
    let body = args.next().unwrap_or_default();

    let (client, _pushes) = Client::connect(ClientConfig::tcp(addr)).await?;
    match client
        .request_with_timeout(&method, body.into_bytes(), Duration::from_secs(2))
        .await
    {
        Ok(answer) => println!("{method} -> {}", String::from_utf8_lossy(&answer)),
        // The handler refused or does not exist; the session is still open.
        Err(Error::Method(refused)) => println!("{method} refused: {refused}"),
        Err(other) => return Err(other.into()),
    }

    // Events are acked once they are in the server's pipeline.
    match client.event("example", "requested").await {
        Ok(()) => println!("event acked"),
        Err(Error::Limit(full)) => println!("event dropped, pipeline full: {full}"),
        Err(other) => return Err(other.into()),
    }
    client.close().await;
    Ok(())
}

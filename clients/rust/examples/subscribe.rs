//! Subscribes to topics and prints every push, gap and connection change until Ctrl-C.
//!
//! ```text
//! cargo run -p holdfast-client --example subscribe -- 127.0.0.1:7878 news sport
//! holdfast publish --topic news 'hello'        # in another terminal
//! ```

use holdfast_client::{Client, ClientConfig, ConnectionState, Gap, Incoming};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let topics: Vec<String> = args.collect();
    if topics.is_empty() {
        return Err("usage: subscribe ADDR TOPIC [TOPIC ...]".into());
    }

    let (client, mut pushes) = Client::connect(ClientConfig::tcp(addr)).await?;
    client.subscribe(topics.iter().cloned()).await?;
    println!("subscribed to {topics:?}; session {:?}", client.session());

    let mut states = client.watch_state();
    loop {
        tokio::select! {
            item = pushes.recv() => match item {
                Some(Incoming::Push(push)) => println!(
                    "{} #{}: {}",
                    push.topic,
                    push.seq,
                    String::from_utf8_lossy(&push.payload)
                ),
                Some(Incoming::Gap(Gap::Missed {
                    topic,
                    first_missed_seq: first,
                    last_missed_seq: last,
                    dropped_here,
                    ..
                })) => {
                    println!("gap on {topic}: #{first}..=#{last}, {dropped_here} dropped here")
                }
                Some(Incoming::Gap(gap)) => println!("{} was renumbered: {gap:?}", gap.topic()),
                Some(other) => println!("{other:?}"),
                None => break,
            },
            changed = states.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = states.borrow_and_update().clone();
                println!("connection: {state:?}");
                if let ConnectionState::Closed { .. } = state {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                break;
            }
        }
    }
    Ok(())
}

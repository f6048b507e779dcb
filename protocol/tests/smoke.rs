use bytes::BytesMut;
use holdfast_protocol::{payload::Hello, *};

#[test]
fn hello_round_trips_through_decoder_byte_by_byte() {
    let mut out = BytesMut::new();
    let hello = Hello {
        client_id: "c1",
        token: b"tok",
        versions: &[1],
        heartbeat_ms: 5000,
    };
    encode_frame(&mut out, Kind::Hello, 0, 7, &hello, MAX_FRAME_BYTES_DEFAULT).unwrap();
    let mut dec = Decoder::new(MAX_FRAME_BYTES_DEFAULT);
    let mut seen = 0;
    for b in out.iter() {
        dec.feed(std::slice::from_ref(b), |f| {
            let Payload::Hello(Some(h)) = f.payload else {
                panic!("not a full hello")
            };
            assert_eq!(&*h.client_id, "c1");
            assert_eq!(&*h.token, b"tok");
            assert_eq!(h.heartbeat_ms.to_native(), 5000);
            assert_eq!(f.header.id, 7);
            seen += 1;
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    }
    assert_eq!(seen, 1);
}

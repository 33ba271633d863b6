//! The opening handshake, rule by rule, on byte literals.

use bytes::BytesMut;
use hubbub_proto::Config;
use hubbub_proto::handshake::{
    AcceptResponse, ClientHandshakeError, ClientRequest, HandshakeError, Request, RequestParser,
};

const GOOD: &str = "GET /chat?room=lobby&x=1 HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Protocol: v3\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-test; q=\"a b\"\r\n\
Cookie: session=abc; theme=dark\r\n\
X-Repeat: one\r\n\
x-repeat: two\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

fn parse(text: &str) -> Result<Option<Request>, HandshakeError> {
    RequestParser::new(&Config::default()).parse(&mut BytesMut::from(text))
}

fn status_of(text: &str) -> u16 {
    match parse(text) {
        Err(e) => e.status(),
        Ok(Some(request)) => request
            .validate_upgrade()
            .map_or_else(|e| e.status(), |_| 101),
        Ok(None) => 0,
    }
}

fn replace(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn valid_request_yields_rfc_accept_key() {
    let request = parse(GOOD).unwrap().unwrap();
    assert_eq!(
        request.validate_upgrade().unwrap(),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn request_exposes_everything_it_carried() {
    let r = parse(GOOD).unwrap().unwrap();
    assert_eq!(r.method(), "GET");
    assert_eq!(r.target(), "/chat?room=lobby&x=1");
    assert_eq!(r.path(), "/chat");
    assert_eq!(r.query(), Some("room=lobby&x=1"));
    assert_eq!(r.host(), Some("server.example.com"));
    assert_eq!(r.origin(), Some("http://example.com"));
    assert_eq!(
        r.header("SEC-websocket-KEY"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(
        r.headers().get_all("X-Repeat").collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(
        r.cookies(),
        vec![
            ("session".into(), "abc".into()),
            ("theme".into(), "dark".into())
        ]
    );
    assert_eq!(r.protocols(), ["chat", "superchat", "v3"]);
    let ext = r.extensions();
    assert_eq!(ext.len(), 2);
    assert_eq!(ext[0].name, "permessage-deflate");
    assert_eq!(
        ext[0].params,
        vec![("client_max_window_bits".to_owned(), None)]
    );
    assert_eq!(
        ext[1].params,
        vec![("q".to_owned(), Some("a b".to_owned()))]
    );
    assert_eq!(r.http_minor_version(), 1);
    assert!(r.is_upgrade());
    // The fields are the head's, in order: nothing else (the request line
    // is kept beside them, hidden), and a copy made from them is equal.
    let names: Vec<&str> = r.headers().iter().map(|(name, _)| name).collect();
    assert_eq!(names.len(), 12);
    assert_eq!(names[0], "Host");
    assert_eq!(names[11], "Sec-WebSocket-Version");
    assert_eq!(r.headers().len(), 12);
    let mut copy = hubbub_proto::handshake::Headers::default();
    for (name, value) in r.headers().iter() {
        copy.append(name, value);
    }
    assert_eq!(&copy, r.headers());
    let rebuilt = Request::from_parts("GET", "/chat?room=lobby&x=1", 1, copy).unwrap();
    assert_eq!(rebuilt, r);
}

#[test]
fn incomplete_head_returns_none_and_consumes_nothing_at_every_prefix() {
    let mut parser = RequestParser::new(&Config::default());
    let mut buf = BytesMut::new();
    for (i, byte) in GOOD.bytes().enumerate() {
        buf.extend_from_slice(&[byte]);
        if i + 1 < GOOD.len() {
            assert!(parser.parse(&mut buf).unwrap().is_none(), "at {i}");
            assert_eq!(buf.len(), i + 1);
        }
    }
    assert!(parser.parse(&mut buf).unwrap().is_some());
    assert!(buf.is_empty());
}

#[test]
fn bytes_after_the_head_are_handed_back() {
    let mut buf = BytesMut::from(GOOD);
    buf.extend_from_slice(b"\x81\x85frame");
    let request = RequestParser::new(&Config::default())
        .parse(&mut buf)
        .unwrap();
    assert!(request.is_some());
    assert_eq!(&buf[..], b"\x81\x85frame");
}

#[test]
fn method_other_than_get_is_405() {
    assert_eq!(status_of(&replace("GET /chat", "POST /chat")), 405);
}

#[test]
fn http_1_0_is_400() {
    assert_eq!(status_of(&replace("HTTP/1.1", "HTTP/1.0")), 400);
}

#[test]
fn missing_host_is_400() {
    assert_eq!(status_of(&replace("Host: server.example.com\r\n", "")), 400);
}

#[test]
fn upgrade_and_connection_are_case_insensitive_tokens_in_lists() {
    let text = replace("Upgrade: websocket", "Upgrade: h2c, WebSocket").replacen(
        "Connection: Upgrade",
        "Connection: keep-alive, UPGRADE",
        1,
    );
    assert_eq!(status_of(&text), 101);
}

#[test]
fn missing_upgrade_or_connection_token_is_400() {
    assert_eq!(
        status_of(&replace("Upgrade: websocket", "Upgrade: h2c")),
        400
    );
    assert_eq!(
        status_of(&replace("Connection: Upgrade", "Connection: keep-alive")),
        400
    );
    assert_eq!(
        status_of(&replace("Connection: Upgrade", "Connection: upgraded")),
        400
    );
}

#[test]
fn key_must_be_16_bytes_of_base64_and_single() {
    assert_eq!(
        status_of(&replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==")),
        400
    );
    assert_eq!(
        status_of(&replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!")),
        400
    );
    assert_eq!(
        status_of(&replace(
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ""
        )),
        400
    );
    let twice = replace(
        "Origin:",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nOrigin:",
    );
    assert_eq!(status_of(&twice), 400);
}

#[test]
fn other_version_is_426_offering_13() {
    let err = parse(&replace("Version: 13", "Version: 8"))
        .unwrap()
        .unwrap()
        .validate_upgrade();
    let err = err.unwrap_err();
    assert_eq!(err.status(), 426);
    let mut out = BytesMut::new();
    err.response().write(&mut out);
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
}

#[test]
fn missing_version_is_400() {
    assert_eq!(
        status_of(&replace("Sec-WebSocket-Version: 13\r\n", "")),
        400
    );
}

#[test]
fn head_over_limit_is_431() {
    let long = replace(
        "X-Repeat: one",
        &format!("X-Repeat: {}", "a".repeat(17 * 1024)),
    );
    assert_eq!(status_of(&long), 431);
    // Still incomplete but already past the limit: refused without waiting.
    let spaces = format!("GET / HTTP/1.1\r\nX: {}", " ".repeat(100_000));
    assert_eq!(status_of(&spaces), 431);
    let small = Config::default().with_max_handshake_size(64);
    let err = RequestParser::new(&small)
        .parse(&mut BytesMut::from(GOOD))
        .unwrap_err();
    assert_eq!(err.status(), 431);
}

#[test]
fn too_many_headers_is_431() {
    let mut text = String::from("GET / HTTP/1.1\r\n");
    for i in 0..500 {
        text += &format!("X-{i}: v\r\n");
    }
    text += "\r\n";
    let config = Config::default().with_max_handshake_size(1 << 20);
    let err = RequestParser::new(&config)
        .parse(&mut BytesMut::from(&text[..]))
        .unwrap_err();
    assert_eq!(err.status(), 431);
}

#[test]
fn malformed_http_is_400_with_one_line_reason() {
    let err = parse("GET / HTTP/1.1\r\nBad Header\r\n\r\n").unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(!err.reason().contains('\n'));
    assert_eq!(
        parse("GET nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap_err()
            .status(),
        400
    );
}

#[test]
fn absolute_form_target_yields_path_and_query() {
    let r = parse(&replace(
        "GET /chat?room=lobby&x=1 ",
        "GET ws://server.example.com/a/b?c=d ",
    ))
    .unwrap()
    .unwrap();
    assert_eq!((r.path(), r.query()), ("/a/b", Some("c=d")));
    assert_eq!(r.method(), "GET");
    assert_eq!(r.target(), "ws://server.example.com/a/b?c=d");
    for (target, path, query) in [
        ("ws://server.example.com", "/", None),
        ("ws://server.example.com?q", "/", None),
        ("/?", "/", Some("")),
        ("/p?a?b", "/p", Some("a?b")),
    ] {
        let r = parse(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!((r.target(), r.path(), r.query()), (target, path, query));
    }
}

#[test]
fn header_fields_keep_order_repeats_and_raw_bytes() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nX-Bin: \xff\r\nEmpty:\r\n\r\n";
    let r = RequestParser::new(&Config::default())
        .parse(&mut BytesMut::from(&head[..]))
        .unwrap()
        .unwrap();
    let headers = r.headers();
    assert_eq!(headers.len(), 5);
    assert_eq!(headers.get_all("X-A").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(headers.count("x-a"), 2);
    assert_eq!(headers.get("x-bin"), None, "not UTF-8");
    assert_eq!(headers.get_bytes("x-bin"), Some(&b"\xff"[..]));
    assert_eq!(headers.get("empty"), Some(""));
    let names: Vec<_> = headers.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Host", "X-A", "x-a", "X-Bin", "Empty"]);
}

#[test]
fn plain_get_parses_and_is_not_an_upgrade() {
    let r = parse("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!r.is_upgrade());
    assert_eq!(r.validate_upgrade().unwrap_err().status(), 400);
}

#[test]
fn accept_response_carries_protocol_extension_and_headers() {
    let mut out = BytesMut::new();
    AcceptResponse::new("abc=".into())
        .protocol("chat")
        .extensions("permessage-deflate")
        .header("Set-Cookie", "a=b\r\nInjected: yes")
        .write(&mut out);
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(text.contains("\r\nSec-WebSocket-Accept: abc=\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"));
    assert!(!text.contains("\r\nInjected"), "header injection: {text}");
    assert!(text.ends_with("\r\n\r\n"));
}

fn server_answer(request_bytes: &[u8], protocol: Option<&str>) -> BytesMut {
    let request = parse(std::str::from_utf8(request_bytes).unwrap())
        .unwrap()
        .unwrap();
    let mut response = AcceptResponse::new(request.validate_upgrade().unwrap());
    if let Some(p) = protocol {
        response = response.protocol(p);
    }
    let mut out = BytesMut::new();
    response.write(&mut out);
    out
}

#[test]
fn client_request_round_trips_through_server() {
    let mut client = ClientRequest::new("127.0.0.1:9001", "/echo?x=1")
        .protocol("a")
        .protocol("b")
        .header("Origin", "http://localhost");
    let mut wire = BytesMut::new();
    client.write(&mut wire);
    let request = parse(std::str::from_utf8(&wire).unwrap()).unwrap().unwrap();
    assert_eq!(request.protocols(), ["a", "b"]);
    assert_eq!(request.origin(), Some("http://localhost"));
    let mut answer = server_answer(&wire, Some("b"));
    answer.extend_from_slice(b"\x81\x02hi");
    let response = client
        .parse_response(&mut answer, &Config::default())
        .unwrap()
        .unwrap();
    assert_eq!(response.protocol.as_deref(), Some("b"));
    assert_eq!(&answer[..], b"\x81\x02hi", "frame after the head is kept");
}

#[test]
fn client_refuses_bad_answers() {
    let mut client = ClientRequest::new("h", "/").protocol("a");
    let mut wire = BytesMut::new();
    client.write(&mut wire);
    let config = Config::default();

    let mut other = ClientRequest::new("h", "/");
    let mut other_wire = BytesMut::new();
    other.write(&mut other_wire);
    let mut wrong_key = server_answer(&other_wire, None);
    assert_eq!(
        client.parse_response(&mut wrong_key, &config),
        Err(ClientHandshakeError::BadAccept)
    );

    let mut forbidden = BytesMut::from("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        client.parse_response(&mut forbidden, &config),
        Err(ClientHandshakeError::Status(403))
    );

    let mut unoffered = server_answer(&wire, Some("zzz"));
    assert_eq!(
        client.parse_response(&mut unoffered, &config),
        Err(ClientHandshakeError::UnexpectedProtocol("zzz".into()))
    );

    let mut partial = BytesMut::from("HTTP/1.1 101 Switching");
    assert_eq!(client.parse_response(&mut partial, &config), Ok(None));
}

/// An HTTP/2 extended CONNECT (RFC 8441) as the HTTP/2 layer hands it
/// over: the method, the path, the fields (`:authority` as the `Host`).
fn extended_connect(method: &str, fields: &[(&str, &str)]) -> Request {
    let mut headers = hubbub_proto::handshake::Headers::default();
    for (name, value) in fields {
        headers.append(name, value.as_bytes());
    }
    Request::from_parts(method, "/chat?room=a", 1, headers).unwrap()
}

#[test]
fn extended_connect_rules_of_rfc_8441() {
    let good = [("host", "example.com"), ("sec-websocket-version", "13")];
    let status = |request: &Request, protocol: Option<&str>| {
        request
            .validate_extended_connect(protocol)
            .map_or_else(|e| e.status(), |()| 200)
    };
    let request = extended_connect("CONNECT", &good);
    assert_eq!(status(&request, Some("websocket")), 200);
    assert_eq!(request.path(), "/chat");
    assert_eq!(status(&request, None), 400);
    let other = request.validate_extended_connect(Some("webtransport"));
    assert_eq!(other.as_ref().map_err(HandshakeError::status), Err(501));
    assert!(other.unwrap_err().reason().contains("webtransport"));
    assert_eq!(
        status(&extended_connect("GET", &good), Some("websocket")),
        405
    );
    let no_version = extended_connect("CONNECT", &good[..1]);
    assert_eq!(status(&no_version, Some("websocket")), 400);
    let old = extended_connect(
        "CONNECT",
        &[("host", "example.com"), ("sec-websocket-version", "8")],
    );
    assert_eq!(status(&old, Some("websocket")), 400);
    let no_authority = extended_connect("CONNECT", &good[1..]);
    assert_eq!(status(&no_authority, Some("websocket")), 400);
}

#[test]
fn the_http2_answer_has_only_the_negotiated_fields() {
    let response = AcceptResponse::new("x".into())
        .protocol("chat")
        .extensions("permessage-deflate");
    let fields: Vec<_> = response.negotiated_fields().collect();
    assert_eq!(
        fields,
        [
            ("Sec-WebSocket-Protocol", "chat"),
            ("Sec-WebSocket-Extensions", "permessage-deflate")
        ]
    );
    assert_eq!(response.fields().count(), 5);
}

use super::codec::INFLATE_STEP;
use super::*;

fn offer(params: &[(&str, Option<&str>)]) -> ExtensionOffer {
    ExtensionOffer {
        name: EXTENSION_NAME.into(),
        params: params
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.map(str::to_owned)))
            .collect(),
    }
}

fn answer(offers: &[ExtensionOffer], config: &DeflateConfig) -> Option<String> {
    negotiate(offers, config).map(|(_, a)| a)
}

#[test]
fn deflate_default_offer_is_accepted_without_context_on_either_side() {
    assert_eq!(
        answer(&[offer(&[])], &DeflateConfig::default()).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let keep = DeflateConfig {
        client_no_context_takeover: false,
        ..DeflateConfig::default()
    };
    assert_eq!(
        answer(&[offer(&[])], &keep).as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
}

#[test]
fn deflate_answers_parameters_in_force_and_echoes_requests() {
    let config = DeflateConfig {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        ..DeflateConfig::default()
    };
    let (params, text) = negotiate(
        &[offer(&[
            ("client_no_context_takeover", None),
            ("server_max_window_bits", Some("10")),
            ("client_max_window_bits", Some("12")),
        ])],
        &config,
    )
    .unwrap();
    assert_eq!(
        text,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
    );
    assert_eq!(params.local_max_window_bits, 10);
    assert!(params.remote_no_context_takeover && !params.local_no_context_takeover);
}

#[test]
fn deflate_never_answers_client_window_unless_offered() {
    let text = answer(&[offer(&[])], &DeflateConfig::default()).unwrap();
    assert!(!text.contains("client_max_window_bits"));
    let text = answer(
        &[offer(&[("client_max_window_bits", None)])],
        &DeflateConfig::default(),
    )
    .unwrap();
    assert!(!text.contains("client_max_window_bits"), "{text}");
}

#[test]
fn deflate_declines_unknown_malformed_or_repeated_params_and_tries_next_offer() {
    let config = DeflateConfig::default();
    for bad in [
        offer(&[("x-unknown", None)]),
        offer(&[("server_max_window_bits", None)]),
        offer(&[("server_max_window_bits", Some("16"))]),
        offer(&[("server_max_window_bits", Some("09"))]),
        offer(&[("client_max_window_bits", Some("7"))]),
        offer(&[("server_no_context_takeover", Some("1"))]),
        offer(&[
            ("server_no_context_takeover", None),
            ("server_no_context_takeover", None),
        ]),
    ] {
        assert_eq!(answer(std::slice::from_ref(&bad), &config), None, "{bad:?}");
        let good = offer(&[("server_max_window_bits", Some("12"))]);
        let text = answer(&[bad, good], &config).unwrap();
        assert!(text.contains("server_max_window_bits=12"), "{text}");
    }
}

#[test]
fn deflate_declines_window_8_the_backend_cannot_honour() {
    let config = DeflateConfig::default();
    assert_eq!(
        answer(&[offer(&[("server_max_window_bits", Some("8"))])], &config),
        None
    );
    let text = answer(
        &[
            offer(&[("server_max_window_bits", Some("8"))]),
            offer(&[("server_max_window_bits", Some("9"))]),
        ],
        &config,
    )
    .unwrap();
    assert!(text.ends_with("server_max_window_bits=9"), "{text}");
    // A client window of 8 is fine: the decompressor reads any window.
    assert!(answer(&[offer(&[("client_max_window_bits", Some("8"))])], &config).is_some());
}

#[test]
fn deflate_disabled_or_other_extension_is_not_negotiated() {
    assert_eq!(answer(&[offer(&[])], &DeflateConfig::disabled()), None);
    let other = ExtensionOffer {
        name: "x-webkit-deflate-frame".into(),
        params: vec![],
    };
    assert_eq!(answer(&[other], &DeflateConfig::default()), None);
}

fn params(no_context: bool) -> DeflateParams {
    DeflateParams {
        local_no_context_takeover: no_context,
        remote_no_context_takeover: no_context,
        local_max_window_bits: 15,
        threshold: 0,
        level: 6,
    }
}

#[test]
fn deflate_roundtrip_with_and_without_context_takeover() {
    for no_context in [false, true] {
        let mut c = Compressor::new(&params(no_context));
        let mut d = Decompressor::new(&params(no_context));
        let long = "z".repeat(100_000);
        for message in [
            "hello hello hello",
            "",
            "",
            "hello again, hello hello",
            &long,
            "",
        ] {
            let mut wire = Vec::new();
            c.compress(message.as_bytes(), &mut wire);
            assert!(!wire.ends_with(&[0, 0, 0xff, 0xff]));
            let mut plain = Vec::new();
            d.inflate(&wire, &mut plain, 1 << 20).unwrap();
            d.finish(&mut plain, 1 << 20).unwrap();
            assert_eq!(plain, message.as_bytes());
        }
    }
}

#[test]
fn deflate_inflate_is_bounded_while_inflating() {
    let mut c = Compressor::new(&params(true));
    let mut wire = Vec::new();
    c.compress(&vec![0u8; 10 << 20], &mut wire);
    assert!(wire.len() < 20 << 10, "{}", wire.len());
    let mut d = Decompressor::new(&params(true));
    let mut plain = Vec::new();
    assert_eq!(
        d.inflate(&wire, &mut plain, 100_000),
        Err(InflateError::TooLarge)
    );
    assert!(
        plain.capacity() <= 100_000 + INFLATE_STEP,
        "{}",
        plain.capacity()
    );
}

#[test]
fn deflate_corrupt_data_is_an_error() {
    let mut d = Decompressor::new(&params(true));
    let mut plain = Vec::new();
    let result = d.inflate(&[0xff, 0xff, 0xff, 0x00, 0x12], &mut plain, 1000);
    assert_eq!(result, Err(InflateError::Corrupt));
}

#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hubbub_fuzz::server(data));

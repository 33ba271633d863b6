#![no_main]
// The whole connection driver over an in-memory pipe (see hubbub's `fuzz`
// module); the seeds in corpus/driver are replayed by hubbub's own tests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hubbub::fuzz::drive(data));

#![no_main]

use monitor::fuzz::Target;

libfuzzer_sys::fuzz_target!(|input: &[u8]| Target::TaskApiRoutes.assert(input));

//! Words of a command line or of environment values that could be a credential, as keyed
//! fingerprints, so that a known value is recognised however it is passed: `--token X`,
//! `-H 'Authorization: Bearer X'`, `url=https://user:X@host`, or copied under another name.
//! Values stay inside this module; the buffers they come from are the caller's, wiped by it.

use crate::{event::TokenSeen, fingerprint::FingerprintKey};

/// Words shorter than this are not fingerprinted: no credential format is shorter, and short
/// words (flags, paths' parts) would only cost time.
pub const MIN_TOKEN_LEN: usize = 16;
/// At most this many words per exec; the rest are counted as cut.
pub const MAX_TOKENS: usize = 512;

/// The words of `text` long enough to be a credential.
pub fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&byte| is_separator(byte)).filter(|word| word.len() >= MIN_TOKEN_LEN)
}

/// What separates the words of a value: whitespace and the punctuation that surrounds a value in
/// flags, headers, URLs and assignments.
fn is_separator(byte: u8) -> bool {
    byte.is_ascii_whitespace() || b"=:;,\"'@/?&".contains(&byte)
}

/// The candidate words of the NUL-separated arguments `argv` (argv[0] excluded) and of the values
/// of the `NAME=VALUE` entries of `env`, fingerprinted with `key`, each once; and how many were
/// left out past [`MAX_TOKENS`].
pub fn candidates(argv: &[u8], env: &[u8], key: &FingerprintKey) -> (Vec<TokenSeen>, usize) {
    let arguments = argv.split(|&byte| byte == 0).skip(1).map(|argument| (None, argument));
    let values = env.split(|&byte| byte == 0).filter_map(|entry| {
        let equals = entry.iter().position(|&byte| byte == b'=')?;
        Some((Some(&entry[..equals]), &entry[equals + 1..]))
    });
    let mut seen = Vec::new();
    let mut cut = 0;
    for (name, text) in arguments.chain(values) {
        for word in words(text) {
            let fingerprint = key.fingerprint(word);
            if seen.iter().any(|known: &TokenSeen| known.fingerprint == fingerprint) {
                continue;
            }
            if seen.len() == MAX_TOKENS {
                cut += 1;
                continue;
            }
            let env = name.map(|name| String::from_utf8_lossy(name).into_owned());
            seen.push(TokenSeen { env, fingerprint });
        }
    }
    (seen, cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::tests::random_key;

    #[test]
    fn tokens_are_found_in_flags_headers_urls_and_other_names() {
        let key = random_key();
        let token = "tok3nValueThatIsLong42";
        let argv = format!("curl\0-H\0Authorization: Bearer {token}\0--data\0x=1\0https://u:{token}@host/p\0");
        let env = format!("PATH=/usr/bin\0MY_COPY={token}\0");
        let (words, cut) = candidates(argv.as_bytes(), env.as_bytes(), &key);
        assert_eq!(cut, 0);
        let fingerprint = key.fingerprint(token.as_bytes());
        let found: Vec<_> = words.iter().filter(|word| word.fingerprint == fingerprint).collect();
        assert_eq!(found.len(), 1, "once, however often it appears");
        assert_eq!(found[0].env, None, "first seen on the command line");
        assert!(!words.iter().any(|word| word.fingerprint == key.fingerprint(b"Authorization")), "short words skipped");
        let (in_env, _) = candidates(b"true\0", env.as_bytes(), &key);
        assert_eq!(in_env[0].env.as_deref(), Some("MY_COPY"));
        assert_eq!(in_env[0].fingerprint, fingerprint);
    }

    #[test]
    fn argv0_is_not_a_candidate_and_the_count_is_bounded() {
        let key = random_key();
        let (words, _) = candidates(b"/usr/bin/averyveryverylongprogramname\0", b"", &key);
        assert!(words.is_empty());
        let many: String = (0..MAX_TOKENS + 5).map(|index| format!("word-{index:020}\0")).collect();
        let (words, cut) = candidates(format!("x\0{many}").as_bytes(), b"", &key);
        assert_eq!((words.len(), cut), (MAX_TOKENS, 5));
    }
}

//! Encodings shared by every client and adapter: percent-encoding of URL path segments and
//! query values, and base64 for `Authorization: Basic` headers. One home, so that no two
//! call sites encode differently.

/// Percent-encodes a URL path segment or query component (all but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`enc`]: `%XX` sequences become their bytes (a malformed one stays as it is).
pub fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// base64url without padding (RFC 4648 §5), as opencode's web UI names a project
/// directory in its paths.
pub fn base64url(bytes: &[u8]) -> String {
    base64(bytes).trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(enc("a b/c=d"), "a%20b%2Fc%3Dd");
        assert_eq!(enc("ws-1_x.y~"), "ws-1_x.y~");
        assert_eq!(enc("ü"), "%C3%BC");
        for s in ["a b/c=d", "/workspaces/ü x", "", "100%"] {
            assert_eq!(dec(&enc(s)), s);
        }
        assert_eq!(dec("%zz%4"), "%zz%4", "a malformed escape stays");
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b"me:ghp_secret123"), "bWU6Z2hwX3NlY3JldDEyMw==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn base64url_is_unpadded_and_url_safe() {
        assert_eq!(base64url(b"/workspaces/webui-src"), "L3dvcmtzcGFjZXMvd2VidWktc3Jj");
        assert_eq!(base64url("/w/ü?>".as_bytes()), "L3cvw7w_Pg");
    }
}

//! HTML building blocks for the pages: escaping (every dynamic value goes through
//! [`esc`]), the page layout, and the unified-diff renderer. Pure, unit-tested.

use std::fmt::Write;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Terminal escapes and other controls from agent output are shown, not obeyed.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment for an `href`.
pub fn seg(s: &str) -> String {
    crate::encode::enc(s)
}

/// A whole page: `title` is text, `body` is HTML. `nav` marks the current section.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · devaipod</title><link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>
<body><header class="top"><a class="brand" href="/">devaipod</a><nav><a href="/">Workspaces</a><a href="/audit">Audit log</a><a href="/doctor">Doctor</a></nav>
<form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form></header>
<main>{body}</main></body></html>"#,
        title = esc(title)
    )
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A state as a badge (`class` from a fixed set, so no escaping issue).
pub fn badge(state: &str) -> String {
    let class = match state {
        "running" | "queued" | "needs_input" | "waiting" | "checking" => "busy",
        "completed" | "complete" | "chosen" | "applied" | "pushed" | "allow" => "good",
        "failed" | "cancelled" | "rejected" | "deny" | "error" | "exited" | "missing" => "bad",
        "open" => "open",
        _ => "plain",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(state))
}

/// A doctor's check level (ok, warning, error) as a badge.
pub fn level_badge(level: &str) -> String {
    let class = match level {
        "ok" => "good",
        "warning" => "busy",
        "error" => "bad",
        _ => "plain",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(level))
}

/// A pod's or container's state as a badge: running is good here.
pub fn run_badge(state: &str) -> String {
    let class = match state {
        "running" => "good",
        "created" | "configured" | "paused" | "degraded" => "busy",
        "exited" | "stopped" | "missing" | "dead" => "bad",
        _ => "plain",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(state))
}

/// A unified diff as HTML: one block per file (with an anchor), each line classed as
/// added, removed, hunk header or context.
pub fn diff(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    let mut n = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            if open {
                out.push_str("</pre></section>");
            }
            n += 1;
            let name = rest.rsplit_once(" b/").map_or(rest, |(_, b)| b);
            let _ = write!(out, r#"<section class="file" id="file-{n}"><h3>{}</h3><pre class="diff">"#, esc(name));
            open = true;
            continue;
        }
        if !open {
            out.push_str(r#"<section class="file"><pre class="diff">"#);
            open = true;
        }
        let class = if line.starts_with("+++") || line.starts_with("---") || line.starts_with("index ") {
            "meta"
        } else if line.starts_with("@@") {
            "hunk"
        } else if line.starts_with('+') {
            "add"
        } else if line.starts_with('-') {
            "del"
        } else if line.starts_with("new file") || line.starts_with("deleted file") || line.starts_with("Binary") {
            "meta"
        } else {
            "ctx"
        };
        // Block-level spans: one per line, so no newline between them.
        let _ = write!(out, r#"<span class="{class}">{}</span>"#, esc(line));
    }
    if open {
        out.push_str("</pre></section>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("a\u{1b}[31mred"), "a\u{fffd}[31mred");
        assert_eq!(esc("line\nnext\tx"), "line\nnext\tx");
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_764_072_000), "2025-11-25 12:00:00");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn diff_rendering() {
        let d = "diff --git a/x.txt b/x.txt\nnew file mode 100644\nindex 0000000..e69de29\n--- /dev/null\n+++ b/x.txt\n@@ -0,0 +1,2 @@\n+<b>hi</b>\n-old\n ctx\ndiff --git a/y b/y\n@@ -1 +1 @@\n-a\n+b\n";
        let h = diff(d);
        assert_eq!(h.matches("<section class=\"file\"").count(), 2);
        assert!(h.contains(r#"<h3>x.txt</h3>"#) && h.contains(r#"id="file-2""#));
        assert!(h.contains(r#"<span class="add">+&lt;b&gt;hi&lt;/b&gt;</span>"#), "{h}");
        assert!(h.contains(r#"<span class="del">-old</span>"#));
        assert!(h.contains(r#"<span class="hunk">@@ -0,0 +1,2 @@</span>"#));
        assert!(h.contains(r#"<span class="meta">+++ b/x.txt</span>"#));
        assert!(!h.contains("<b>"), "nothing from the diff is markup");
        assert_eq!(diff(""), "");
    }

    #[test]
    fn badges_escape_unknown_states() {
        assert!(badge("running").contains("busy"));
        assert_eq!(badge("<x>"), r#"<span class="badge plain">&lt;x&gt;</span>"#);
    }
}

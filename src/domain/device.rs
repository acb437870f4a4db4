//! Device labels for "where you are logged in": a browser and an operating system read from
//! the User-Agent header at login.
//!
//! Hand-written on purpose: /account needs two words per session, not a full User-Agent
//! database, and a label built only from the fixed names below can never carry the header's
//! own text (unbounded, attacker-chosen) into a page or a cookie.

/// Longest User-Agent read; real ones are a few hundred bytes, anything past this is noise.
const MAX_READ: usize = 1024;

/// The browser family, checked most specific first: Edge, Opera and Samsung Internet all say
/// "Chrome" and "Safari" too, and Chrome says "Safari".
const BROWSERS: &[(&str, &str)] = &[
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Vivaldi/", "Vivaldi"),
    ("FxiOS/", "Firefox"),
    ("Firefox/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
    ("Wget/", "Wget"),
];

/// The operating system, checked most specific first: Android and ChromeOS say "Linux", iOS
/// says "like Mac OS X".
const SYSTEMS: &[(&str, &str)] = &[
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("iPod", "iOS"),
    ("Windows", "Windows"),
    ("Macintosh", "macOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
    ("FreeBSD", "FreeBSD"),
    ("OpenBSD", "OpenBSD"),
];

/// What a session is labelled when its User-Agent names nothing known (or is missing).
pub const UNKNOWN: &str = "Unknown browser";

fn first_match(ua: &str, table: &[(&str, &'static str)]) -> Option<&'static str> {
    table
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map(|(_, name)| *name)
}

/// A short, human label for a User-Agent: "Firefox on Linux", "Chrome on Android", "Safari on
/// macOS"; "Firefox" or "A browser on Windows" when only one half is known, [`UNKNOWN`] when
/// neither is.
pub fn label(user_agent: Option<&str>) -> String {
    let ua = user_agent.unwrap_or_default();
    // Cut on a char boundary; the tables are ASCII, so nothing they match is lost.
    let ua = match ua.char_indices().nth(MAX_READ) {
        Some((end, _)) => &ua[..end],
        None => ua,
    };
    match (first_match(ua, BROWSERS), first_match(ua, SYSTEMS)) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(browser), None) => browser.to_owned(),
        (None, Some(system)) => format!("A browser on {system}"),
        (None, None) => UNKNOWN.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ua: &str) -> String {
        label(Some(ua))
    }

    #[test]
    fn the_three_everyday_browsers_are_named_with_their_system() {
        assert_eq!(
            of("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            "Firefox on Linux"
        );
        assert_eq!(
            of(
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/126.0.0.0 Mobile Safari/537.36"
            ),
            "Chrome on Android"
        );
        assert_eq!(
            of(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like \
                 Gecko) Version/17.5 Safari/605.1.15"
            ),
            "Safari on macOS"
        );
    }

    #[test]
    fn browsers_built_on_chrome_are_named_as_themselves() {
        assert_eq!(
            of(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"
            ),
            "Edge on Windows"
        );
        assert_eq!(
            of(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0"
            ),
            "Opera on Linux"
        );
        assert_eq!(
            of(
                "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) \
                 SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36"
            ),
            "Samsung Internet on Android"
        );
    }

    #[test]
    fn apple_phones_are_ios_whatever_the_browser() {
        assert_eq!(
            of(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1"
            ),
            "Chrome on iOS"
        );
        assert_eq!(
            of(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
            ),
            "Safari on iOS"
        );
    }

    #[test]
    fn headless_chrome_on_linux_and_chromeos_are_told_apart() {
        assert_eq!(
            of(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 HeadlessChrome/131.0.0.0 Safari/537.36"
            ),
            "Chrome on Linux"
        );
        assert_eq!(
            of(
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/126.0.0.0 Safari/537.36"
            ),
            "Chrome on ChromeOS"
        );
    }

    #[test]
    fn half_known_and_unknown_agents_get_an_honest_label() {
        assert_eq!(of("curl/8.5.0"), "curl");
        assert_eq!(of("SomeBot/1.0 (Windows)"), "A browser on Windows");
        assert_eq!(of("reqwest"), UNKNOWN);
        assert_eq!(of(""), UNKNOWN);
        assert_eq!(label(None), UNKNOWN);
    }

    #[test]
    fn the_label_never_carries_the_header_text() {
        let hostile = format!(
            "<script>alert(1)</script> Firefox/1 {}",
            "x".repeat(100_000)
        );
        assert_eq!(of(&hostile), "Firefox");
        // Past the part that is read, nothing counts.
        assert_eq!(of(&format!("{} Firefox/1", "é".repeat(2000))), UNKNOWN);
    }
}

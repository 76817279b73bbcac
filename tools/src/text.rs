//! Quoting values that came from the network in log lines.

/// At most `max` characters of a value that came from the network, cut on a character
/// boundary: what a log line may quote of it.
pub fn first_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(end, _)| &s[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_network_values_are_truncated_on_a_char_boundary() {
        assert_eq!(super::first_chars("short", 256), "short");
        let long = "é".repeat(266);
        assert_eq!(super::first_chars(&long, 256).chars().count(), 256);
    }
}

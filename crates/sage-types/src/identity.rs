//! Platform identities: a platform name (`Thor`) and its LCT id (`thor_sage_lct`).

/// The default LCT id of a platform: its lowercased name followed by `_sage_lct`.
///
/// ```
/// assert_eq!(sage_types::default_lct_id("Thor"), "thor_sage_lct");
/// ```
pub fn default_lct_id(name: &str) -> String {
    format!("{}_sage_lct", name.to_lowercase())
}

/// Whether `name` is usable as a platform name: it becomes part of a key file
/// name, so it is 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lct_is_lowercased() {
        assert_eq!(default_lct_id("Sprout"), "sprout_sage_lct");
        assert_eq!(default_lct_id("legion"), "legion_sage_lct");
    }

    #[test]
    fn names_that_could_escape_the_key_directory_are_invalid() {
        assert!(is_valid_name("Thor"));
        assert!(is_valid_name("jetson-orin_2"));
        for bad in ["", "../etc", "a/b", "thor.key", "Thor ", "é"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
    }
}

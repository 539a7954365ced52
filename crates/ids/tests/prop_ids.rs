//! Property tests over access key id parsing: any string is classified without panicking, and the
//! account a generated key id encodes is read back.

use keyward_ids::{
    account_of_key_id, is_account_id, is_well_formed_key_id, is_well_formed_secret, key_kind,
    new_access_key_id, KeyKind,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_string_is_classified(s in any::<String>()) {
        let _ = (key_kind(&s), is_well_formed_key_id(&s), is_well_formed_secret(&s), is_account_id(&s));
        if let Some(a) = account_of_key_id(&s) {
            prop_assert!(is_account_id(&a));
        }
    }

    #[test]
    fn key_shaped_strings_are_classified(s in "(AKIA|ASIA|AIDA|AROA)[A-Z2-7]{14,18}") {
        if let Some(a) = account_of_key_id(&s) {
            prop_assert!(is_account_id(&a));
            prop_assert!(is_well_formed_key_id(&s));
        }
    }

    #[test]
    fn generated_key_ids_encode_their_account(account in "[0-9]{12}", temporary in any::<bool>()) {
        let kind = if temporary { KeyKind::Temporary } else { KeyKind::LongTerm };
        let id = new_access_key_id(kind, &account);
        prop_assert!(is_well_formed_key_id(&id));
        prop_assert_eq!(key_kind(&id), Some(kind));
        prop_assert_eq!(account_of_key_id(&id), Some(account));
    }
}

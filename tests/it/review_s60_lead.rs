//! Session 60: `link` and `unlink` given the other kind of id. The two ids look
//! alike to a person (both opaque), and each command takes them in one order:
//! given an identity's id where an account's belongs, they said only that the id
//! was not in the snapshot, which reads as a stale snapshot, not a slip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::qa_cli::{account, first_plan_stored, person};
use crate::review_s48_unlink::{run, store_links};

/// `unlink IDENTITY` (a person's id for their account's) names the account
/// linked to them and the command that unlinks it; nothing is unlinked.
#[test]
fn unlink_given_a_persons_id_names_the_account_linked_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account("w3", "ada@example.com", "ada@example.com")],
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u1", "w3")]);

    let (code, out, err) = run(&config, &["unlink", "00u1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "\"00u1\" is a directory identity's id, not a workspace account's: `unlink` \
             takes the account. Linked to it: `seatwarden unlink w3`"
        ),
        "{err}"
    );
    let links = seatwarden::store::Store::open(&database)
        .unwrap()
        .links()
        .unwrap();
    assert_eq!(links.len(), 1, "nothing unlinked: {links:?}");

    // An id that is neither keeps its message.
    let (code, _, err) = run(&config, &["unlink", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("account \"nobody\" is not in the newest workspace snapshot"),
        "{err}"
    );
}

/// `link ACCOUNT IDENTITY`, the two swapped, says so and gives the command in
/// the right order; nothing is linked.
#[test]
fn link_with_its_two_ids_swapped_gives_the_command_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account("w3", "ada.l@example.com", "ada.l@example.com")],
    );
    let (code, out, err) = run(&config, &["link", "w3", "00u1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "\"w3\" is a workspace account and \"00u1\" a directory identity: `link` takes \
             the identity first, `seatwarden link 00u1 w3`"
        ),
        "{err}"
    );
    let links = seatwarden::store::Store::open(&dir.path().join("state.db"))
        .unwrap()
        .links()
        .unwrap();
    assert!(links.is_empty(), "{links:?}");

    // In order, it links.
    let (code, out, err) = run(&config, &["link", "00u1", "w3"]);
    assert_eq!(code, Some(0), "{out}{err}");
}
